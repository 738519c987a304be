"""Versioned schema of the reporting store: the same SQL for chDB and a ClickHouse server.

Migrations run in order at start and are recorded in `schema_migrations`; every statement is
idempotent (`IF NOT EXISTS`), so a start that died half-way through a migration simply redoes it.
Never edit a released migration: add the next version.

Minimum server version: ClickHouse 24.8 LTS (DateTime64, Bool, LowCardinality, bloom_filter
indexes, `insert_deduplication_token` and `non_replicated_deduplication_window` on MergeTree).

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
- `non_replicated_deduplication_window` keeps the hashes of the last inserts, so that a batch
  retried with the same `insert_deduplication_token` is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LATEST_VERSION", "MIGRATIONS", "SCHEMA_MIGRATIONS_DDL", "Migration"]

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
)

LATEST_VERSION = max(m.version for m in MIGRATIONS)
