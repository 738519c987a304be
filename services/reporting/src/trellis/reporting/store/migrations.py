"""Versioned schema of the reporting store: the same SQL for chDB and a ClickHouse server.

Migrations run in order at start and are recorded in `schema_migrations`; every statement is
idempotent (`IF NOT EXISTS`), so a start that died half-way through a migration simply redoes it.
Never edit a released migration: add the next version.

Minimum server version: ClickHouse 24.8 LTS (DateTime64, Bool, LowCardinality, bloom_filter
indexes, `insert_deduplication_token` and `non_replicated_deduplication_window` on MergeTree,
lightweight DELETE with `lightweight_deletes_sync` (24.4), materialized views deduplicating with
`deduplicate_blocks_in_dependent_materialized_views`).

Why these keys:
- `mastery_latest` is ordered by (tenant, class, learner, skill): the class heatmap, the hot query,
  reads one contiguous key range (tenant, class) and pages by (learner, skill). It is a
  ReplacingMergeTree versioned by the Kafka offset (a learner's events all sit in the partition of
  the `tenant/learner` key, so the offset is their order); readers deduplicate with FINAL or
  argMax. A learner's own view crosses classes: a bloom filter on learner_id keeps that read
  from scanning the tenant, and argMax by offset picks the newest value over the learner's classes.
- `mastery_history` is ordered by (tenant, learner, skill, time): growth of one learner or skill.
- `activity` is ordered by (tenant, school, class, learner, time) and partitioned by month, per
  DESIGN.md: school and class reports read key ranges; old months can be dropped whole.
- Every table records the Kafka position of each row (source_topic/partition/offset): the sink
  reads `max(source_offset)` per partition at start and never inserts a record twice, whatever
  the consumer group's committed offsets say (replay, crash between insert and commit).
- Roster tables (migration 2) are ReplacingMergeTree keyed by the entity and versioned by the
  offset of the compacted topic (a key always lives in one partition); a tombstone is a row with
  `deleted = 1`. Readers use FINAL and `deleted = 0`.
- `engagement_daily` (SummingMergeTree) and `learner_goals` (ReplacingMergeTree) are filled by
  materialized views over `activity`; they are erased with the same lightweight DELETE.
  `engagement_daily` has the key of `activity`; a bloom filter on class_id (migration 3) keeps a
  class's read (no school given) from scanning the tenant.
- `roster_class_enrollments` (migration 5) is `roster_enrollments` keyed by class, kept by the
  store after each insert of enrollments and at start (`CATCH_UP_CLASS_ENROLLMENTS`, for the rows
  past the highest offset it holds per partition): every class and school report reads a class's
  members, and `roster_enrollments` is keyed by enrollment id, which in real feeds (GUIDs) does
  not follow classes, so that read scanned the tenant's enrollments. A moved or ended enrollment
  leaves a tombstone in its old class. It replaces migration 4's bloom filter on
  `roster_enrollments.class_id` (dropped: it helped only when ids followed classes, and cost more
  than a scan when they did not; bench/README.md). Erasure deletes from it by learner.
- `erased_learners` lists the (tenant, learner) pairs erased: the sink consults it before every
  insert, so a replay of the log never brings an erased learner back.
- `non_replicated_deduplication_window` keeps the hashes of the last inserts, so that a batch
  retried with the same `insert_deduplication_token` is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CATCH_UP_CLASS_ENROLLMENTS",
    "CLASS_ENROLLMENTS_MIGRATION",
    "LATEST_VERSION",
    "MIGRATIONS",
    "SCHEMA_MIGRATIONS_DDL",
    "Migration",
]

DEDUP_WINDOW = 10_000


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    # SQL with `{db}` standing for the database name.
    statements: tuple[str, ...]


SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY version
"""

_SOURCE_COLUMNS = """
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64"""

# `roster_class_enrollments`: each (class, enrollment) pair as the enrollment's newest version
# sees it: that version's row in its own class, a tombstone (`deleted = 1`) in every other class
# the enrollment was ever in (moved away or ended), versioned by that version's offset. Derived
# from `roster_enrollments` by the store (a materialized view sees only the inserted rows, not
# the class an enrollment leaves) for the enrollments with a version among the rows that
# `__NEWER__` (a WHERE term over `roster_enrollments`) selects. Idempotent: the same rows again,
# which the engine collapses.
CLASS_ENROLLMENTS_MIGRATION = 5
CATCH_UP_CLASS_ENROLLMENTS = """
INSERT INTO {db}.roster_class_enrollments
SELECT tenant_id, class_id, enrollment_id, newest.2, newest.3,
       toUInt8(newest.4 = 1 OR newest.1 != class_id), topic, partition, version
FROM (
    SELECT tenant_id, enrollment_id, any(source_topic) AS topic,
           any(source_partition) AS partition, max(source_offset) AS version,
           argMax((class_id, learner_id, role, deleted), source_offset) AS newest,
           groupUniqArrayIf(class_id, deleted = 0) AS classes
    FROM {db}.roster_enrollments
    WHERE (tenant_id, enrollment_id) IN (
        SELECT tenant_id, enrollment_id FROM {db}.roster_enrollments WHERE __NEWER__)
    GROUP BY tenant_id, enrollment_id
)
ARRAY JOIN classes AS class_id
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "mastery history, latest mastery and activity",
        (
            f"""
CREATE TABLE IF NOT EXISTS {{db}}.mastery_history (
    event_id String,
    tenant_id LowCardinality(String),
    school_id LowCardinality(String),
    class_id LowCardinality(String),
    learner_id String,
    skill_id LowCardinality(String),
    p_before Float64,
    p_after Float64,
    level UInt8,
    cause_event_id String,
    model_version LowCardinality(String),
    attempts UInt32,
    occurred_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC'),{_SOURCE_COLUMNS}
) ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, learner_id, skill_id, occurred_at)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS {{db}}.mastery_latest (
    tenant_id LowCardinality(String),
    school_id LowCardinality(String),
    class_id LowCardinality(String),
    learner_id String,
    skill_id LowCardinality(String),
    p_mastered Float64,
    level UInt8,
    attempts UInt32,
    model_version LowCardinality(String),
    event_id String,
    updated_at DateTime64(3, 'UTC'),{_SOURCE_COLUMNS},
    INDEX learner_bloom learner_id TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = ReplacingMergeTree(source_offset)
ORDER BY (tenant_id, class_id, learner_id, skill_id)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS {{db}}.activity (
    event_id String,
    tenant_id LowCardinality(String),
    school_id LowCardinality(String),
    class_id LowCardinality(String),
    learner_id String,
    occurred_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC'),
    kind LowCardinality(String),
    source_system LowCardinality(String),
    actor LowCardinality(String),
    activity_id String,
    skill_ids Array(LowCardinality(String)),
    correct Nullable(Bool),
    score Nullable(Float64),
    attempt_number UInt32,
    hints_used UInt32,
    duration_seconds Float64,
    completion Nullable(Float64),
    error_tag LowCardinality(String),
    assignment_id String,
    self_chosen Bool,{_SOURCE_COLUMNS}
) ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, school_id, class_id, learner_id, occurred_at)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
""",
        ),
    ),
    Migration(
        2,
        "roster, mastery events, engagement rollups, goals, erasure",
        (
            # Columns for recommendation choices, goals and reflections (no free text).
            "ALTER TABLE {db}.activity "
            "ADD COLUMN IF NOT EXISTS recommendation_id String DEFAULT ''",
            "ALTER TABLE {db}.activity ADD COLUMN IF NOT EXISTS option_index UInt32 DEFAULT 0",
            "ALTER TABLE {db}.activity ADD COLUMN IF NOT EXISTS target_date String DEFAULT ''",
            "ALTER TABLE {db}.activity ADD COLUMN IF NOT EXISTS confidence Nullable(Float64)",
            f"""
CREATE TABLE IF NOT EXISTS {{db}}.roster_schools (
    tenant_id LowCardinality(String),
    school_id String,
    name String,
    type LowCardinality(String),
    parent_id String,
    deleted UInt8,{_SOURCE_COLUMNS}
) ENGINE = ReplacingMergeTree(source_offset)
ORDER BY (tenant_id, school_id)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS {{db}}.roster_classes (
    tenant_id LowCardinality(String),
    class_id String,
    school_id LowCardinality(String),
    grade LowCardinality(String),
    subject LowCardinality(String),
    deleted UInt8,{_SOURCE_COLUMNS}
) ENGINE = ReplacingMergeTree(source_offset)
ORDER BY (tenant_id, class_id)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS {{db}}.roster_enrollments (
    tenant_id LowCardinality(String),
    enrollment_id String,
    class_id String,
    learner_id String,
    role LowCardinality(String),
    school_id LowCardinality(String),
    deleted UInt8,{_SOURCE_COLUMNS}
) ENGINE = ReplacingMergeTree(source_offset)
ORDER BY (tenant_id, enrollment_id)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS {{db}}.roster_learners (
    tenant_id LowCardinality(String),
    learner_id String,
    school_id LowCardinality(String),
    grade LowCardinality(String),
    subgroups Array(LowCardinality(String)),
    deleted UInt8,{_SOURCE_COLUMNS}
) ENGINE = ReplacingMergeTree(source_offset)
ORDER BY (tenant_id, learner_id)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS {{db}}.mastery_events (
    event_id String,
    tenant_id LowCardinality(String),
    school_id LowCardinality(String),
    class_id LowCardinality(String),
    learner_id String,
    kind LowCardinality(String),
    skill_id LowCardinality(String),
    reason LowCardinality(String),
    error_tag LowCardinality(String),
    attempts UInt32,
    p Float64,
    occurred_at DateTime64(3, 'UTC'),{_SOURCE_COLUMNS}
) ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, class_id, learner_id, occurred_at)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS {{db}}.erased_learners (
    tenant_id LowCardinality(String),
    learner_id String,
    event_id String,
    erased_at DateTime64(3, 'UTC'),{_SOURCE_COLUMNS}
) ENGINE = ReplacingMergeTree(source_offset)
ORDER BY (tenant_id, learner_id)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
""",
            # Rollups: the target tables keep a deduplication window too, so that a batch
            # retried with the same token (dropped by `activity`) is not counted twice here
            # (with `deduplicate_blocks_in_dependent_materialized_views`).
            f"""
CREATE TABLE IF NOT EXISTS {{db}}.engagement_daily (
    tenant_id LowCardinality(String),
    school_id LowCardinality(String),
    class_id LowCardinality(String),
    learner_id String,
    day Date,
    events UInt64,
    attempts UInt64,
    correct UInt64,
    attempt_seconds Float64,
    resources UInt64,
    resource_seconds Float64
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, school_id, class_id, learner_id, day)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
""",
            """
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.engagement_daily_mv TO {db}.engagement_daily AS
SELECT tenant_id, school_id, class_id, learner_id, toDate(occurred_at) AS day,
       count() AS events,
       countIf(kind = 'item_attempted') AS attempts,
       countIf(kind = 'item_attempted' AND ifNull(score, 0) >= 0.5) AS correct,
       sumIf(duration_seconds, kind = 'item_attempted') AS attempt_seconds,
       countIf(kind = 'resource_engaged') AS resources,
       sumIf(duration_seconds, kind = 'resource_engaged') AS resource_seconds
FROM {db}.activity
GROUP BY tenant_id, school_id, class_id, learner_id, day
""",
            f"""
CREATE TABLE IF NOT EXISTS {{db}}.learner_goals (
    tenant_id LowCardinality(String),
    learner_id String,
    goal_id String,
    school_id LowCardinality(String),
    class_id LowCardinality(String),
    skill_id LowCardinality(String),
    target_date String,
    set_at DateTime64(3, 'UTC'),
    source_offset UInt64
) ENGINE = ReplacingMergeTree(source_offset)
ORDER BY (tenant_id, learner_id, goal_id)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}
""",
            """
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.learner_goals_mv TO {db}.learner_goals AS
SELECT tenant_id, learner_id, activity_id AS goal_id, school_id, class_id,
       if(empty(skill_ids), '', skill_ids[1]) AS skill_id, target_date,
       occurred_at AS set_at, source_offset
FROM {db}.activity
WHERE kind = 'goal_set'
""",
            # Activity stored before this migration: the rollups start from it (only while
            # they are empty, so a migration redone after a crash does not count it twice).
            """
INSERT INTO {db}.engagement_daily
SELECT tenant_id, school_id, class_id, learner_id, toDate(occurred_at) AS day,
       count(), countIf(kind = 'item_attempted'),
       countIf(kind = 'item_attempted' AND ifNull(score, 0) >= 0.5),
       sumIf(duration_seconds, kind = 'item_attempted'),
       countIf(kind = 'resource_engaged'), sumIf(duration_seconds, kind = 'resource_engaged')
FROM {db}.activity
WHERE (SELECT count() FROM {db}.engagement_daily) = 0
GROUP BY tenant_id, school_id, class_id, learner_id, day
""",
            """
INSERT INTO {db}.learner_goals
SELECT tenant_id, learner_id, activity_id, school_id, class_id,
       if(empty(skill_ids), '', skill_ids[1]), target_date, occurred_at, source_offset
FROM {db}.activity
WHERE kind = 'goal_set' AND (SELECT count() FROM {db}.learner_goals) = 0
""",
        ),
    ),
    Migration(
        3,
        "engagement rollup: a class skip index",
        (
            # A class target names no school, so the key (tenant, school, class, ...) cannot
            # narrow the read; the index skips granules without the class. MATERIALIZE builds
            # it for parts written before (a background mutation; redoing it is harmless).
            "ALTER TABLE {db}.engagement_daily ADD INDEX IF NOT EXISTS class_bloom class_id "
            "TYPE bloom_filter(0.01) GRANULARITY 1",
            "ALTER TABLE {db}.engagement_daily MATERIALIZE INDEX class_bloom",
        ),
    ),
    Migration(
        4,
        "roster enrollments: a class skip index",
        (
            # Class and school reports read a class's enrollments (`roster_enrollments` is keyed
            # by enrollment id): without it each read scans the tenant's enrollments. With FINAL
            # the index is used only where `use_skip_indexes_if_final` is on, as by default since
            # ClickHouse 25.6 (chDB 4.4 is 26.9), with its exact mode, so that a newer version of
            # an enrollment is never skipped; on older servers it is unused, not wrong. It pays
            # when enrollment ids follow classes (bench/README.md, 2026-12-02). An index holds no
            # data of its own: erasure is unaffected.
            "ALTER TABLE {db}.roster_enrollments ADD INDEX IF NOT EXISTS class_bloom class_id "
            "TYPE bloom_filter(0.01) GRANULARITY 1",
            "ALTER TABLE {db}.roster_enrollments MATERIALIZE INDEX class_bloom",
        ),
    ),
    Migration(
        CLASS_ENROLLMENTS_MIGRATION,
        "roster enrollments keyed by class",
        (
            f"""
CREATE TABLE IF NOT EXISTS {{db}}.roster_class_enrollments (
    tenant_id LowCardinality(String),
    class_id String,
    enrollment_id String,
    learner_id String,
    role LowCardinality(String),
    deleted UInt8,{_SOURCE_COLUMNS}
) ENGINE = ReplacingMergeTree(source_offset)
ORDER BY (tenant_id, class_id, enrollment_id)
""",
            # The enrollments stored before (a redo writes the same rows again).
            CATCH_UP_CLASS_ENROLLMENTS.replace("__NEWER__", "1"),
            # Migration 4's index: a class's members are read from the table above now.
            "ALTER TABLE {db}.roster_enrollments DROP INDEX IF EXISTS class_bloom",
        ),
    ),
)

LATEST_VERSION = max(m.version for m in MIGRATIONS)
