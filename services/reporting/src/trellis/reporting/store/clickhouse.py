"""The reporting store on clickhouse-connect: a ClickHouse server by URL, or (subclass) chDB.

One SQL for both. The client is lazy (STYLE.md §4: boot never hangs on a down store) and there is
one per thread: the sink thread and the query threads never wait on each other's client lock.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver import options
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from trellis.reporting.rows import (
    ACTIVITY,
    ENGAGEMENT_DAILY,
    ERASED_LEARNERS,
    LEARNER_GOALS,
    MASTERY_EVENTS,
    MASTERY_HISTORY,
    MASTERY_LATEST,
    ROSTER_CLASS_ENROLLMENTS,
    ROSTER_CLASSES,
    ROSTER_ENROLLMENTS,
    ROSTER_LEARNERS,
    ROSTER_SCHOOLS,
    Row,
)
from trellis.reporting.store.base import (
    EngagementDay,
    ErrorCount,
    GoalRow,
    GrowthRow,
    HeatmapCell,
    HeatmapRows,
    LearnerGoalsRow,
    PartitionKey,
    ReadyLearner,
    ReflectionRow,
    ReportingStore,
    RollupRows,
    SkillGap,
    SkillProgress,
    StoreError,
    StoreStatus,
    SupportReason,
    Target,
    TimelineEntry,
)
from trellis.reporting.store.migrations import (
    CATCH_UP_CLASS_ENROLLMENTS,
    CLASS_ENROLLMENTS_MIGRATION,
    LATEST_VERSION,
    MIGRATIONS,
    SCHEMA_MIGRATIONS_DDL,
)
from trellis.reporting.store.native import native_block

__all__ = ["TABLES", "ClickHouseStore"]

# Tables the sink writes (and positions are read from).
TABLES = (
    ACTIVITY,
    MASTERY_HISTORY,
    MASTERY_LATEST,
    MASTERY_EVENTS,
    ERASED_LEARNERS,
    ROSTER_SCHOOLS,
    ROSTER_CLASSES,
    ROSTER_ENROLLMENTS,
    ROSTER_LEARNERS,
)
# Tables holding rows of a learner (`learner_id`), materialized rollups included: erasure
# deletes from each. `erased_learners` itself is kept: it is what keeps a replay out.
LEARNER_TABLES = (
    ACTIVITY,
    MASTERY_HISTORY,
    MASTERY_LATEST,
    MASTERY_EVENTS,
    ROSTER_ENROLLMENTS,
    ROSTER_LEARNERS,
    ENGAGEMENT_DAILY,
    LEARNER_GOALS,
    ROSTER_CLASS_ENROLLMENTS,
)
# Kept by the store itself (`CATCH_UP_CLASS_ENROLLMENTS`), from `roster_enrollments`.
COUNTED_TABLES = (*TABLES, ENGAGEMENT_DAILY, LEARNER_GOALS, ROSTER_CLASS_ENROLLMENTS)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Synchronous, deduplicated inserts: the sink commits Kafka offsets only after this returns, so
# nothing may complete behind the call (chDB enables async_insert by default).
# Materialized views drop a retried block too (their target tables keep a dedup window).
# Columns are sent with their LowCardinality wrappers removed (`_wire_type`): the server converts
# them (Native input type conversion, on by default since 23.3) and builds the dictionaries in C++,
# where clickhouse-connect would build them in Python.
_INSERT_SETTINGS = {
    "async_insert": 0,
    "insert_deduplicate": 1,
    "deduplicate_blocks_in_dependent_materialized_views": 1,
    "input_format_native_allow_types_conversion": 1,
}
_LOW_CARDINALITY = re.compile(r"LowCardinality\(([^()]*(?:\([^()]*\))?[^()]*)\)")
# Lightweight DELETE (ClickHouse >= 23.3 GA; chDB 4.x): rows are masked at once and purged by
# merges; synchronous so that erasure is done when the call returns.
_DELETE_SETTINGS = {"lightweight_deletes_sync": 2, "mutations_sync": 2}


class ClickHouseStore(ReportingStore):
    """A ClickHouse server over HTTP(S): `url` like `http://user:password@host:8123`."""

    def __init__(self, url: str, database: str) -> None:
        if not _IDENTIFIER.fullmatch(database):
            raise ValueError(f"database name {database!r} is not a plain identifier")
        self._url = url
        self.database = database
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Client] = []
        self._closed = False
        # Per table: column -> the type its values are sent as (read once: no DESCRIBE per insert).
        self._wire_types: dict[str, dict[str, str]] = {}
        # Per roster partition: the offset from which `roster_class_enrollments` is behind.
        self._class_enrollments_next: dict[PartitionKey, int] | None = None

    # --- connection ---

    def _connect(self) -> Client:
        load_optional_modules()
        # No session id: one HTTP client may then serve concurrent queries.
        return clickhouse_connect.get_client(
            dsn=self._url,
            autogenerate_session_id=False,
            connect_timeout=5,
            send_receive_timeout=60,
        )

    @property
    def client(self) -> Client:
        """This thread's client, connected on first use."""
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            with self._lock:
                if self._closed:
                    raise StoreError("the store is closed")
                try:
                    client = self._connect()
                except ClickHouseError as exc:
                    raise StoreError(f"cannot connect to the store: {exc}") from exc
                self._clients.append(client)
            self._local.client = client
        return client

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def _sql(self, template: str) -> str:
        return template.replace("{db}", self.database)

    def _query(
        self,
        template: str,
        parameters: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> list[Any]:
        settings = {} if timeout_s is None else {"max_execution_time": max(1, round(timeout_s))}
        try:
            result = self.client.query(
                self._sql(template), parameters=dict(parameters or {}), settings=settings
            )
            rows = list(result.result_rows)
        except ClickHouseError as exc:
            raise StoreError(f"query failed: {exc}") from exc
        return rows

    def _command(self, template: str, parameters: Mapping[str, Any] | None = None) -> None:
        try:
            self.client.command(self._sql(template), parameters=dict(parameters or {}))
        except ClickHouseError as exc:
            raise StoreError(f"command failed: {exc}") from exc

    # --- port ---

    def status(self) -> StoreStatus:
        try:
            rows = self.client.query(
                self._sql("SELECT max(version) FROM {db}.schema_migrations")
            ).result_rows
        except (OperationalError, StoreError):
            return StoreStatus.AWAY
        except Exception:
            return StoreStatus.ERROR
        return StoreStatus.OK if rows and rows[0][0] >= LATEST_VERSION else StoreStatus.ERROR

    def migrate(self) -> list[int]:
        self._command("CREATE DATABASE IF NOT EXISTS {db}")
        self._command(SCHEMA_MIGRATIONS_DDL)
        applied = {row[0] for row in self._query("SELECT version FROM {db}.schema_migrations")}
        self._wire_types.clear()
        done = []
        for migration in MIGRATIONS:
            if migration.version in applied:
                continue
            for statement in migration.statements:
                self._command(statement)
            self._command(
                "INSERT INTO {db}.schema_migrations (version, name, applied_at) "
                "SELECT {version:UInt32}, {name:String}, now64(3)",
                {"version": migration.version, "name": migration.name},
            )
            done.append(migration.version)
        if CLASS_ENROLLMENTS_MIGRATION in applied:
            # Enrollments stored by a process that died before catching up (`insert_native`).
            self._catch_up_class_enrollments()
        return done

    def _catch_up_class_enrollments(self) -> None:
        """Derive `roster_class_enrollments` for the enrollments stored past what it holds: the
        next offset per partition is read from it once, then kept here (reading it costs a scan
        of the table, about 25 ms at 1,000,000 enrollments)."""
        if self._class_enrollments_next is None:
            rows = self._query(
                "SELECT source_topic, source_partition, max(source_offset) + 1"
                " FROM {db}.roster_class_enrollments GROUP BY source_topic, source_partition"
            )
            self._class_enrollments_next = {(str(t), int(p)): int(n) for t, p, n in rows}
        newer, parameters = _past(self._class_enrollments_next)
        # The newest offsets first: rows stored after this read are caught up too, but only
        # these are counted as done.
        newest = self._query(
            "SELECT source_topic, source_partition, max(source_offset)"
            f" FROM {{db}}.roster_enrollments WHERE {newer}"
            " GROUP BY source_topic, source_partition",
            parameters,
        )
        if not newest:
            return
        try:
            self.client.command(
                self._sql(CATCH_UP_CLASS_ENROLLMENTS.replace("__NEWER__", newer)),
                parameters=parameters,
                settings={"async_insert": 0},
            )
        except ClickHouseError as exc:
            raise StoreError(f"catching up roster_class_enrollments failed: {exc}") from exc
        for topic, partition, offset in newest:
            self._class_enrollments_next[(str(topic), int(partition))] = int(offset) + 1

    def positions(self, tables: Sequence[str]) -> dict[str, dict[PartitionKey, int]]:
        # One query for all tables (UNION ALL): a query per table took five times as long in
        # chDB (about 50 vs 10 ms for the sink's nine tables), paid after every assignment.
        for table in tables:
            _check_table(table)
        found: dict[str, dict[PartitionKey, int]] = {table: {} for table in tables}
        if not tables:
            return found
        rows = self._query(
            " UNION ALL ".join(
                f"SELECT '{table}', source_topic, source_partition, max(source_offset) "
                f"FROM {{db}}.{table} GROUP BY source_topic, source_partition"
                for table in tables
            )
        )
        for table, topic, partition, offset in rows:
            found[str(table)][(str(topic), int(partition))] = int(offset)
        return found

    def insert(self, table: str, rows: Sequence[Row], token: str) -> None:
        _check_table(table)
        if not rows:
            return
        columns, block = native_block(table, rows, self.wire_types(table))
        self.insert_native(table, columns, block, token)

    def wire_types(self, table: str) -> dict[str, str]:
        """Column -> the type its values are sent as (for `native_block`)."""
        _check_table(table)
        return self._column_wire_types(table)

    def insert_native(self, table: str, columns: Sequence[str], block: bytes, token: str) -> None:
        """Insert one block of ClickHouse's Native format (`native_block`): like `insert`, with the
        rows serialized already (by the sink's decoding process)."""
        _check_table(table)
        try:
            self.client.raw_insert(
                f"{self.database}.{table}",
                list(columns),
                block,
                settings={**_INSERT_SETTINGS, "insert_deduplication_token": token},
                fmt="Native",
            )
        except ClickHouseError as exc:
            raise StoreError(f"insert into {table} failed: {exc}") from exc
        if table == ROSTER_ENROLLMENTS:
            # Before the sink commits: a failure here retries the batch (its insert is dropped
            # as a duplicate, the catch-up redone).
            self._catch_up_class_enrollments()

    def _column_wire_types(self, table: str) -> dict[str, str]:
        """Column -> the type its values are sent as; read once, for every table at once."""
        if table not in self._wire_types:
            described = self._query(
                "SELECT table, name, type FROM system.columns WHERE database = {database:String}",
                {"database": self.database},
            )
            wire_types: dict[str, dict[str, str]] = defaultdict(dict)
            for owner, name, kind in described:
                wire_types[str(owner)][str(name)] = _wire_type(str(kind))
            self._wire_types = {**wire_types, table: wire_types.get(table, {})}
        return self._wire_types[table]

    def learner_progress(
        self,
        tenant_id: str,
        learner_id: str,
        *,
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
    ) -> list[SkillProgress]:
        # argMax by offset over all of the learner's rows: deduplicates unmerged parts and picks
        # the newest value among the classes where the learner practiced the skill.
        scope, parameters = _scope(classes=classes, schools=schools)
        rows = self._query(
            f"""
            SELECT skill_id, argMax((p_mastered, level, attempts, updated_at), source_offset)
            FROM {{db}}.mastery_latest
            WHERE tenant_id = {{tenant:String}} AND learner_id = {{learner:String}} {scope}
            GROUP BY skill_id
            ORDER BY skill_id
            """,
            {"tenant": tenant_id, "learner": learner_id, **parameters},
        )
        return [
            SkillProgress(
                skill_id=str(skill),
                p_mastered=float(p),
                level=int(level),
                attempts=int(attempts),
                updated_at=_utc(updated_at),
            )
            for skill, (p, level, attempts, updated_at) in rows
        ]

    def class_heatmap(
        self,
        tenant_id: str,
        class_id: str,
        limit: int,
        after: tuple[str, str] | None = None,
        *,
        schools: Sequence[str] | None = None,
    ) -> HeatmapRows:
        # The first page lists the class's learners: `_enrolled` reads them anyway.
        where, parameters = self._enrolled(Target(tenant_id, class_id=class_id), None, schools)
        members: list[str] = parameters["members"]
        after_learner, after_skill = after or ("", "")
        rows = self._query(
            f"""
            SELECT learner_id, skill_id, p_mastered, level
            FROM {{db}}.mastery_latest FINAL
            WHERE {where}
              AND (learner_id > {{after_learner:String}}
                   OR (learner_id = {{after_learner:String}} AND skill_id > {{after_skill:String}}))
            ORDER BY learner_id, skill_id
            LIMIT {{limit:UInt32}}
            """,
            {
                **parameters,
                "after_learner": after_learner,
                "after_skill": after_skill,
                "limit": limit,
            },
        )
        cells = [
            HeatmapCell(
                learner_id=str(learner), skill_id=str(skill), p_mastered=float(p), level=int(level)
            )
            for learner, skill, p, level in rows
        ]
        if after is not None:
            members = []
        elif not members:
            members = self._learners(
                f"SELECT learner_id FROM {{db}}.mastery_latest WHERE {where}", parameters
            )
        return HeatmapRows(cells=cells, learner_ids=members)

    def _learners(
        self, select: str, parameters: Mapping[str, Any], timeout_s: float | None = None
    ) -> list[str]:
        """The distinct learner ids a SELECT of `learner_id` yields, by id."""
        rows = self._query(
            f"SELECT DISTINCT learner_id FROM ({select}) ORDER BY learner_id", parameters, timeout_s
        )
        return [str(learner) for (learner,) in rows]

    def _enrolled(
        self,
        target: Target,
        classes: Sequence[str] | None,
        schools: Sequence[str] | None,
        timeout_s: float | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """`_where` kept to the learners the target enrols now (`_members`, bound as `members`), so
        that a learner who left drops out; when the roster enrols no one there (`members` empty),
        every learner with rows there (a roster may lag activity, or not be sent at all).
        The members are read first, in a query of their own: one roster read, cheaper than
        subqueries of it in the report's query (bench/README.md, 2026-12-02)."""
        where, parameters = _where(target, classes, schools)
        members = self._learners(_members(target, classes, schools), parameters, timeout_s)
        if members:
            where += " AND has({members:Array(String)}, learner_id)"
        return where, {**parameters, "members": members}

    def row_counts(self, tenant_id: str) -> dict[str, int]:
        # Replacing tables count their live keys (FINAL); roster tables leave tombstones out.
        final = {MASTERY_LATEST, ERASED_LEARNERS, LEARNER_GOALS}
        parts = []
        for table in COUNTED_TABLES:
            if table.startswith("roster_"):
                body = f"{{db}}.{table} FINAL WHERE deleted = 0 AND"
            elif table in final:
                body = f"{{db}}.{table} FINAL WHERE"
            else:
                body = f"{{db}}.{table} WHERE"
            parts.append(f"SELECT '{table}', count() FROM {body} tenant_id = {{tenant:String}}")
        rows = self._query(" UNION ALL ".join(parts), {"tenant": tenant_id})
        counts = {str(table): int(count) for table, count in rows}
        return {table: counts.get(table, 0) for table in COUNTED_TABLES}

    # --- reports ---

    def learner_enrolled(
        self,
        tenant_id: str,
        learner_id: str,
        *,
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> bool:
        # A class's school is the roster's class record (as in the other services' roster
        # views), not the enrollment's own school_id, which a feed may leave empty: `_members`.
        _, parameters = _where(Target(tenant_id), classes, schools)
        rows = self._query(
            f"{_members(Target(tenant_id), classes, schools)} AND learner_id = {{learner:String}}"
            " LIMIT 1",
            {**parameters, "learner": learner_id},
            timeout_s,
        )
        return bool(rows)

    def needs_support(
        self,
        target: Target,
        *,
        since: datetime,
        until: datetime,
        low_p: float,
        min_attempts: int,
        min_events: int,
        limit: int,
        after: str = "",
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[SupportReason]:
        where, parameters = _where(target, classes, schools)
        if target.class_id:
            # A class's (learner, skill) cells are the table's keys: FINAL deduplicates them,
            # cheaper than argMax.
            latest = f"""
                SELECT learner_id, skill_id, p_mastered AS p, attempts AS n
                FROM {{db}}.mastery_latest FINAL WHERE {where}"""
        else:
            # A school's view crosses classes: argMax picks a learner's newest cell among them.
            latest = _LATEST.format(where=where)
        # One GROUP BY learner over every source (each query step costs planning time, which
        # dominates here): reasons, recent events, enrolled (`member`: `_members`), active at all.
        # The population is the target's members (one who left keeps old rows here, and is not
        # named; one without any activity is low on engagement), or, when the roster enrols no
        # one there, whoever has rows (as `_enrolled`). Whether it enrols anyone is a window
        # over all learners, so it is taken before paging filters. The roster as a source here
        # costs less than `_enrolled`'s query of its own (bench/README.md, 2026-12-02).
        rows = self._query(
            f"""
            SELECT learner_id, reasons FROM (
                SELECT learner_id, max(listed) AS member,
                       max(max(listed)) OVER () AS roster_enrols,
                       arraySort(arrayConcat(
                           groupArrayIf((reason, skill, value, detail), reason != ''),
                           if(sum(recent) < {{min_events:UInt64}}
                              AND (member = 1 OR max(active) = 1),
                              [('low_engagement', '', toFloat64(sum(recent)), '')], [])))
                           AS reasons
                FROM (
                    SELECT learner_id, 'low_mastery' AS reason, toString(skill_id) AS skill,
                           p AS value, '' AS detail,
                           toUInt64(0) AS recent, toUInt8(0) AS listed, toUInt8(0) AS active
                    FROM ({latest})
                    WHERE p < {{low_p:Float64}} AND n >= {{min_attempts:UInt32}}
                    UNION ALL
                    SELECT learner_id, 'struggling', toString(skill_id), toFloat64(max(attempts)),
                           arrayStringConcat(arraySort(groupUniqArray(
                               if(error_tag = '', toString(reason),
                                  concat(toString(reason), ':', toString(error_tag))))), ','),
                           0, 0, 0
                    FROM {{db}}.mastery_events
                    WHERE {where} AND kind = 'struggling_detected'
                      AND occurred_at >= {{since:DateTime64(3, 'UTC')}}
                      AND occurred_at <= {{until:DateTime64(3, 'UTC')}}
                    GROUP BY learner_id, skill_id
                    UNION ALL
                    SELECT learner_id, '', '', 0, '',
                           if(day >= toDate({{since:DateTime64(3, 'UTC')}})
                              AND day <= toDate({{until:DateTime64(3, 'UTC')}}), events, 0),
                           0, 1
                    FROM {{db}}.engagement_daily WHERE {where}
                    UNION ALL
                    SELECT learner_id, '', '', 0, '', 0, 1, 0
                    FROM ({_members(target, classes, schools)})
                )
                GROUP BY learner_id
            )
            WHERE learner_id > {{after:String}} AND notEmpty(reasons)
              AND (member = 1 OR roster_enrols = 0)
            ORDER BY learner_id
            LIMIT {{limit:UInt32}}
            """,
            {
                **parameters,
                "since": _time(since),
                "until": _time(until),
                "low_p": low_p,
                "min_attempts": min_attempts,
                "min_events": min_events,
                "after": after,
                "limit": limit,
            },
            timeout_s,
        )
        return [
            SupportReason(str(learner), str(reason), str(skill), float(value), str(detail))
            for learner, reasons in rows
            for reason, skill, value, detail in reasons
        ]

    def ready_to_accelerate(
        self,
        target: Target,
        *,
        since: datetime,
        until: datetime,
        mastered_share: float,
        min_skills: int,
        limit: int,
        after: str = "",
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[ReadyLearner]:
        where, parameters = self._enrolled(target, classes, schools, timeout_s)
        rows = self._query(
            f"""
            SELECT learner_id, count() AS started, countIf(level = {MASTERED_LEVEL}) AS mastered
            FROM ({_LATEST.format(where=where)})
            WHERE learner_id > {{after:String}}
              AND learner_id NOT IN (
                SELECT learner_id FROM {{db}}.mastery_events
                WHERE {where} AND kind = 'struggling_detected'
                  AND occurred_at >= {{since:DateTime64(3, 'UTC')}}
                  AND occurred_at <= {{until:DateTime64(3, 'UTC')}})
            GROUP BY learner_id
            HAVING started >= {{min_skills:UInt32}} AND mastered >= started * {{share:Float64}}
            ORDER BY learner_id
            LIMIT {{limit:UInt32}}
            """,
            {
                **parameters,
                "since": _time(since),
                "until": _time(until),
                "min_skills": min_skills,
                "share": mastered_share,
                "after": after,
                "limit": limit,
            },
            timeout_s,
        )
        return [ReadyLearner(str(learner), int(s), int(m)) for learner, s, m in rows]

    def skill_gaps(
        self,
        target: Target,
        *,
        low_p: float,
        limit: int,
        after: str = "",
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[SkillGap]:
        where, parameters = self._enrolled(target, classes, schools, timeout_s)
        rows = self._query(
            f"""
            SELECT toString(skill_id) AS skill, count(), countIf(p < {{low_p:Float64}}),
                   countIf(level = {MASTERED_LEVEL}), avg(p)
            FROM ({_LATEST.format(where=where)})
            WHERE skill > {{after:String}}
            GROUP BY skill ORDER BY skill LIMIT {{limit:UInt32}}
            """,
            {**parameters, "low_p": low_p, "after": after, "limit": limit},
            timeout_s,
        )
        return [
            SkillGap(str(skill), int(n), int(below), int(mastered), float(mean))
            for skill, n, below, mastered, mean in rows
        ]

    def engagement(
        self,
        target: Target,
        *,
        since: date,
        until: date,
        learner_id: str = "",
        limit: int,
        after: tuple[str, date] | None = None,
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[EngagementDay]:
        where, parameters = self._enrolled(target, classes, schools, timeout_s)
        after_learner, after_day = after or ("", date(1970, 1, 1))
        learner = "AND learner_id = {learner:String}" if learner_id else ""
        rows = self._query(
            f"""
            SELECT learner_id, day, sum(events), sum(attempts), sum(correct),
                   sum(attempt_seconds), sum(resources), sum(resource_seconds)
            FROM {{db}}.engagement_daily
            WHERE {where} {learner} AND day >= {{since:Date}} AND day < {{until:Date}}
              AND (learner_id > {{after_learner:String}}
                   OR (learner_id = {{after_learner:String}} AND day > {{after_day:Date}}))
            GROUP BY learner_id, day
            ORDER BY learner_id, day
            LIMIT {{limit:UInt32}}
            """,
            {
                **parameters,
                "learner": learner_id,
                "since": since,
                "until": until,
                "after_learner": after_learner,
                "after_day": after_day,
                "limit": limit,
            },
            timeout_s,
        )
        return [
            EngagementDay(
                str(learner),
                day,
                int(events),
                int(attempts),
                int(correct),
                float(a_s),
                int(resources),
                float(r_s),
            )
            for learner, day, events, attempts, correct, a_s, resources, r_s in rows
        ]

    def error_breakdown(
        self,
        target: Target,
        *,
        since: datetime,
        until: datetime,
        skill_id: str = "",
        limit: int,
        after: tuple[str, str] | None = None,
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[ErrorCount]:
        where, parameters = self._enrolled(target, classes, schools, timeout_s)
        after_skill, after_tag = after or ("", "")
        skill = "AND skill = {skill:String}" if skill_id else ""
        rows = self._query(
            f"""
            SELECT skill, tag, count(), uniqExact(learner_id)
            FROM (
                SELECT learner_id, toString(s) AS skill, toString(error_tag) AS tag
                FROM {{db}}.activity ARRAY JOIN skill_ids AS s
                WHERE {where} AND kind = 'item_attempted' AND error_tag != ''
                  AND occurred_at >= {{since:DateTime64(3, 'UTC')}}
                  AND occurred_at < {{until:DateTime64(3, 'UTC')}}
            )
            WHERE (skill > {{after_skill:String}}
                   OR (skill = {{after_skill:String}} AND tag > {{after_tag:String}})) {skill}
            GROUP BY skill, tag
            ORDER BY skill, tag
            LIMIT {{limit:UInt32}}
            """,
            {
                **parameters,
                "skill": skill_id,
                "since": _time(since),
                "until": _time(until),
                "after_skill": after_skill,
                "after_tag": after_tag,
                "limit": limit,
            },
            timeout_s,
        )
        return [ErrorCount(str(s), str(t), int(n), int(lrn)) for s, t, n, lrn in rows]

    def growth(
        self,
        target: Target,
        *,
        since: datetime,
        until: datetime,
        limit: int,
        after: tuple[str, str] | None = None,
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[GrowthRow]:
        where, parameters = self._enrolled(target, classes, schools, timeout_s)
        after_learner, after_skill = after or ("", "")
        rows = self._query(
            f"""
            SELECT learner_id, toString(skill_id) AS skill,
                   if(countIf(occurred_at < {{since:DateTime64(3, 'UTC')}}) > 0,
                      argMaxIf(p_after, source_offset,
                               occurred_at < {{since:DateTime64(3, 'UTC')}}),
                      argMinIf(p_before, source_offset,
                               occurred_at >= {{since:DateTime64(3, 'UTC')}})) AS p_start,
                   argMax(p_after, source_offset) AS p_end,
                   countIf(occurred_at >= {{since:DateTime64(3, 'UTC')}}) AS updates
            FROM {{db}}.mastery_history
            WHERE {where} AND occurred_at < {{until:DateTime64(3, 'UTC')}}
              AND (learner_id > {{after_learner:String}}
                   OR (learner_id = {{after_learner:String}} AND skill_id > {{after_skill:String}}))
            GROUP BY learner_id, skill
            HAVING updates > 0
            ORDER BY learner_id, skill
            LIMIT {{limit:UInt32}}
            """,
            {
                **parameters,
                "since": _time(since),
                "until": _time(until),
                "after_learner": after_learner,
                "after_skill": after_skill,
                "limit": limit,
            },
            timeout_s,
        )
        return [
            GrowthRow(str(learner), str(skill), float(p0), float(p1), int(n))
            for learner, skill, p0, p1, n in rows
        ]

    def timeline(
        self,
        tenant_id: str,
        learner_id: str,
        *,
        since: datetime,
        until: datetime,
        limit: int,
        after: tuple[datetime, str] | None = None,
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[TimelineEntry]:
        scope, parameters = _scope(classes=classes, schools=schools)
        after_time, after_event = after or (datetime(1970, 1, 1, tzinfo=UTC), "")
        rows = self._query(
            f"""
            SELECT occurred_at, event_id, kind, skills, activity_id, score, detail, duration
            FROM (
                SELECT occurred_at, event_id, toString(kind) AS kind,
                       arrayMap(x -> toString(x), skill_ids) AS skills, activity_id,
                       score, toString(error_tag) AS detail, duration_seconds AS duration
                FROM {{db}}.activity
                WHERE tenant_id = {{tenant:String}} AND learner_id = {{learner:String}} {scope}
                UNION ALL
                SELECT occurred_at, event_id, toString(kind), [toString(skill_id)], '',
                       toNullable(p),
                       if(error_tag = '', toString(reason),
                          concat(toString(reason), ':', toString(error_tag))),
                       0.0
                FROM {{db}}.mastery_events
                WHERE tenant_id = {{tenant:String}} AND learner_id = {{learner:String}} {scope}
            )
            WHERE occurred_at >= {{since:DateTime64(3, 'UTC')}}
              AND occurred_at < {{until:DateTime64(3, 'UTC')}}
              AND (occurred_at > {{after_time:DateTime64(3, 'UTC')}}
                   OR (occurred_at = {{after_time:DateTime64(3, 'UTC')}}
                       AND event_id > {{after_event:String}}))
            ORDER BY occurred_at, event_id
            LIMIT {{limit:UInt32}}
            """,
            {
                **parameters,
                "tenant": tenant_id,
                "learner": learner_id,
                "since": _time(since),
                "until": _time(until),
                "after_time": _time(after_time),
                "after_event": after_event,
                "limit": limit,
            },
            timeout_s,
        )
        return [
            TimelineEntry(
                occurred_at=_utc(at),
                event_id=str(event_id),
                kind=str(kind),
                skill_ids=[str(x) for x in skills],
                activity_id=str(activity),
                score=None if score is None else float(score),
                detail=str(detail),
                duration_seconds=float(duration),
            )
            for at, event_id, kind, skills, activity, score, detail, duration in rows
        ]

    def learner_goals(
        self, tenant_id: str, learner_id: str, *, timeout_s: float | None = None
    ) -> list[GoalRow]:
        rows = self._query(
            """
            SELECT goal_id, toString(skill_id), target_date, set_at
            FROM {db}.learner_goals FINAL
            WHERE tenant_id = {tenant:String} AND learner_id = {learner:String}
            ORDER BY set_at, goal_id
            """,
            {"tenant": tenant_id, "learner": learner_id},
            timeout_s,
        )
        return [GoalRow(str(g), str(s), str(t), _utc(at)) for g, s, t, at in rows]

    def class_goals(
        self,
        target: Target,
        *,
        limit: int,
        after: str = "",
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[LearnerGoalsRow]:
        where, parameters = self._enrolled(target, classes, schools, timeout_s)
        rows = self._query(
            f"""
            SELECT learner_id,
                   arraySort(x -> (x.6, x.7), groupArray((
                       toString(kind), activity_id,
                       if(empty(skill_ids), '', toString(skill_ids[1])),
                       target_date, confidence, occurred_at, source_offset)))
            FROM {{db}}.activity
            WHERE {where} AND kind IN ('goal_set', 'reflection_submitted')
              AND learner_id > {{after:String}}
            GROUP BY learner_id
            ORDER BY learner_id
            LIMIT {{limit:UInt32}}
            """,
            {**parameters, "after": after, "limit": limit},
            timeout_s,
        )
        if not rows:
            return []
        learners = [str(learner) for learner, _ in rows]
        scope, scope_parameters = _scope(classes=classes, schools=schools)
        mastery = self._query(
            f"""
            SELECT learner_id, toString(skill_id), argMax(p_mastered, source_offset),
                   argMax(level, source_offset)
            FROM {{db}}.mastery_latest
            WHERE tenant_id = {{tenant:String}} AND has({{learners:Array(String)}}, learner_id)
              {scope}
            GROUP BY learner_id, skill_id
            """,
            {**scope_parameters, "tenant": target.tenant_id, "learners": learners},
            timeout_s,
        )
        latest = {(str(lrn), str(sk)): (float(p), int(lv)) for lrn, sk, p, lv in mastery}
        out = []
        for learner, items in rows:
            goals: dict[str, GoalRow] = {}
            reflections = []
            for kind, activity_id, skill, target_date, confidence, at, _ in items:
                if kind == "goal_set":
                    # A goal set again replaces the earlier version (items are in time order).
                    goals.pop(str(activity_id), None)
                    goals[str(activity_id)] = GoalRow(
                        str(activity_id), str(skill), str(target_date), _utc(at)
                    )
                else:
                    reflections.append(
                        ReflectionRow(
                            str(activity_id),
                            str(skill),
                            None if confidence is None else float(confidence),
                            _utc(at),
                        )
                    )
            out.append(
                LearnerGoalsRow(
                    learner_id=str(learner),
                    goals=[
                        (goal, *latest.get((str(learner), goal.skill_id), (0.0, 0)))
                        for goal in goals.values()
                    ],
                    reflections=reflections,
                )
            )
        return out

    def rollup(
        self,
        tenant_id: str,
        dimension: str,
        *,
        skill_id: str = "",
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> RollupRows:
        keys = {"school": "r.school_id", "grade": "r.grade", "subgroup": "subgroup"}
        if dimension not in keys:
            raise ValueError(f"unknown rollup dimension {dimension!r}")
        scope, parameters = _scope(schools=schools)
        skill = "AND skill_id = {skill:String}" if skill_id else ""
        # The population: active roster learners of the scope, with or without evidence
        # (no evidence counts as 0), so every query of a caller splits the same total.
        source = f"""
            WITH per_learner AS (
                SELECT learner_id, avg(p) AS mean_p, avg(level = {MASTERED_LEVEL}) AS share
                FROM ({_LATEST.format(where="tenant_id = {tenant:String} " + skill)})
                GROUP BY learner_id
            )
            SELECT __KEY__ AS key, count() AS learners, avg(pl.mean_p), avg(pl.share)
            FROM (
                SELECT learner_id, toString(school_id) AS school_id, toString(grade) AS grade,
                       subgroups
                FROM {{db}}.roster_learners FINAL
                WHERE tenant_id = {{tenant:String}} AND deleted = 0 {scope}
            ) AS r
            LEFT JOIN per_learner AS pl ON r.learner_id = pl.learner_id
            __JOIN__
            __GROUP__
            """
        values = {**parameters, "tenant": tenant_id, "skill": skill_id}
        join = "ARRAY JOIN r.subgroups AS subgroup" if dimension == "subgroup" else ""
        groups = self._query(
            source.replace("__KEY__", f"toString({keys[dimension]})")
            .replace("__JOIN__", join)
            .replace("__GROUP__", "GROUP BY key ORDER BY key"),
            values,
            timeout_s,
        )
        [total] = self._query(
            source.replace("__KEY__", "''").replace("__JOIN__", "").replace("__GROUP__", ""),
            values,
            timeout_s,
        )
        return RollupRows(
            groups=[(str(k), int(n), float(m), float(sh)) for k, n, m, sh in groups],
            total=(int(total[1]), float(total[2] or 0.0), float(total[3] or 0.0)),
        )

    def erased_learners(self) -> set[tuple[str, str]]:
        rows = self._query("SELECT DISTINCT tenant_id, learner_id FROM {db}.erased_learners")
        return {(str(tenant), str(learner)) for tenant, learner in rows}

    def erase_learners(self, tenant_id: str, learner_ids: Sequence[str]) -> None:
        if not learner_ids:
            return
        for table in LEARNER_TABLES:
            try:
                self.client.command(
                    self._sql(
                        f"DELETE FROM {{db}}.{table} WHERE tenant_id = {{tenant:String}} "
                        "AND has({learners:Array(String)}, learner_id)"
                    ),
                    parameters={"tenant": tenant_id, "learners": list(learner_ids)},
                    settings=_DELETE_SETTINGS,
                )
            except ClickHouseError as exc:
                raise StoreError(f"erasure from {table} failed: {exc}") from exc


def load_optional_modules() -> None:
    """clickhouse-connect imports pandas (if installed) on the first insert, about 2 s here: do it
    when connecting, so that it is paid at start and never inside the sink's first batch."""
    _ = options.np, options.pd


def _where(
    target: Target, classes: Sequence[str] | None, schools: Sequence[str] | None
) -> tuple[str, dict[str, Any]]:
    """WHERE terms of a report's target (tenant, class or school) and the caller's scope."""
    terms = ["tenant_id = {tenant:String}"]
    parameters: dict[str, Any] = {"tenant": target.tenant_id}
    if target.class_id:
        terms.append("class_id = {target_class:String}")
        parameters["target_class"] = target.class_id
    if target.school_id:
        terms.append("school_id = {target_school:String}")
        parameters["target_school"] = target.school_id
    scope, scope_parameters = _scope(classes=classes, schools=schools)
    return " AND ".join(terms) + " " + scope, {**parameters, **scope_parameters}


def _members(target: Target, classes: Sequence[str] | None, schools: Sequence[str] | None) -> str:
    """SELECT of the learners the roster enrols now in a target (learner enrollments, not
    tombstoned): in the class, or in a class the roster places in the school (the class's school
    is the roster's class record), within the caller's classes and the classes the roster places
    in its schools; a target of the tenant alone: anywhere in that scope (`learner_enrolled`).
    Takes `_where`'s parameters; ends with its WHERE terms, so more may be appended.

    Read from `roster_class_enrollments` (`roster_enrollments` keyed by class, where a moved or
    ended enrollment leaves a tombstone in its old class): a class's members are found by key,
    not by scanning the tenant's enrollments, whose ids (GUIDs in real feeds) do not follow
    classes."""
    terms = ["tenant_id = {tenant:String}", "deleted = 0", "role = 'learner'"]
    if target.class_id:
        terms.append("class_id = {target_class:String}")
    if classes is not None:
        terms.append("has({classes:Array(String)}, class_id)")
    placed = []
    if target.school_id:
        placed.append("school_id = {target_school:String}")
    if schools is not None:
        placed.append("has({schools:Array(String)}, toString(school_id))")
    if placed:
        terms.append(
            "class_id IN (SELECT class_id FROM {db}.roster_classes FINAL"
            " WHERE tenant_id = {tenant:String} AND deleted = 0 AND " + " AND ".join(placed) + ")"
        )
    return "SELECT learner_id FROM {db}.roster_class_enrollments FINAL WHERE " + " AND ".join(terms)


def _past(next_offsets: Mapping[PartitionKey, int]) -> tuple[str, dict[str, Any]]:
    """WHERE term over `roster_enrollments`: the rows at or past their partition's next offset
    (every row of a partition not named), and its parameters."""
    branches, parameters = [], {}
    for i, ((topic, partition), offset) in enumerate(sorted(next_offsets.items())):
        partition_is = f"source_topic = {{t{i}:String}} AND source_partition = {{p{i}:UInt32}}"
        branches.append(f"{partition_is}, {{n{i}:UInt64}}")
        parameters.update({f"t{i}": topic, f"p{i}": partition, f"n{i}": offset})
    start = f"multiIf({', '.join(branches)}, 0)" if branches else "0"
    return f"source_offset >= {start}", parameters


def _time(value: datetime) -> str:
    """A DateTime64(3, 'UTC') literal for query parameters."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


# Latest mastery per learner x skill within a WHERE (argMax: correct before merges, across classes).
_LATEST = """
    SELECT learner_id, skill_id, argMax(p_mastered, source_offset) AS p,
           argMax(level, source_offset) AS level, argMax(attempts, source_offset) AS n
    FROM {{db}}.mastery_latest WHERE {where}
    GROUP BY learner_id, skill_id"""
MASTERED_LEVEL = 4


def _scope(
    *, classes: Sequence[str] | None = None, schools: Sequence[str] | None = None
) -> tuple[str, dict[str, list[str]]]:
    """Extra WHERE terms and their parameters limiting rows to a caller's classes or schools."""
    terms, parameters = [], {}
    if classes is not None:
        terms.append("AND has({classes:Array(String)}, toString(class_id))")
        parameters["classes"] = list(classes)
    if schools is not None:
        terms.append("AND has({schools:Array(String)}, toString(school_id))")
        parameters["schools"] = list(schools)
    return " ".join(terms), parameters


def _utc(value: datetime) -> datetime:
    """DateTime64(3, 'UTC') values; chDB may hand them back without their zone."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _wire_type(column_type: str) -> str:
    """The type a column's values are sent as: LowCardinality unwrapped, wherever it is nested."""
    return _LOW_CARDINALITY.sub(r"\1", column_type)


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}")
