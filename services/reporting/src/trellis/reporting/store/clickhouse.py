"""The reporting store on clickhouse-connect: a ClickHouse server by URL, or (subclass) chDB.

One SQL for both. The client is lazy (STYLE.md §4: boot never hangs on a down store) and there is
one per thread: the sink thread and the query threads never wait on each other's client lock.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import clickhouse_connect
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
    ROSTER_CLASSES,
    ROSTER_ENROLLMENTS,
    ROSTER_LEARNERS,
    ROSTER_SCHOOLS,
)
from trellis.reporting.store.base import (
    HeatmapCell,
    PartitionKey,
    ReportingStore,
    SkillProgress,
    StoreError,
    StoreStatus,
)
from trellis.reporting.store.migrations import LATEST_VERSION, MIGRATIONS, SCHEMA_MIGRATIONS_DDL

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
)
COUNTED_TABLES = (*TABLES, ENGAGEMENT_DAILY, LEARNER_GOALS)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Synchronous, deduplicated inserts: the sink commits Kafka offsets only after this returns, so
# nothing may complete behind the call (chDB enables async_insert by default).
# Materialized views drop a retried block too (their target tables keep a dedup window).
_INSERT_SETTINGS = {
    "async_insert": 0,
    "insert_deduplicate": 1,
    "deduplicate_blocks_in_dependent_materialized_views": 1,
}
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

    # --- connection ---

    def _connect(self) -> Client:
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

    def _query(self, template: str, parameters: Mapping[str, Any] | None = None) -> list[Any]:
        try:
            result = self.client.query(self._sql(template), parameters=dict(parameters or {}))
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
        return done

    def positions(self, table: str) -> dict[PartitionKey, int]:
        _check_table(table)
        rows = self._query(
            f"SELECT source_topic, source_partition, max(source_offset) FROM {{db}}.{table} "
            "GROUP BY source_topic, source_partition"
        )
        return {(str(topic), int(partition)): int(offset) for topic, partition, offset in rows}

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]], token: str) -> None:
        _check_table(table)
        if not rows:
            return
        columns = list(rows[0])
        # Column-oriented: about twice as fast as rows through clickhouse-connect's Native writer.
        data = [[row[column] for row in rows] for column in columns]
        try:
            self.client.insert(
                table,
                data,
                column_names=columns,
                column_oriented=True,
                database=self.database,
                settings={**_INSERT_SETTINGS, "insert_deduplication_token": token},
            )
        except ClickHouseError as exc:
            raise StoreError(f"insert into {table} failed: {exc}") from exc

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
    ) -> list[HeatmapCell]:
        after_learner, after_skill = after or ("", "")
        scope, parameters = _scope(schools=schools)
        rows = self._query(
            f"""
            SELECT learner_id, skill_id, p_mastered, level
            FROM {{db}}.mastery_latest FINAL
            WHERE tenant_id = {{tenant:String}} AND class_id = {{class:String}}
              AND (learner_id > {{after_learner:String}}
                   OR (learner_id = {{after_learner:String}} AND skill_id > {{after_skill:String}}))
              {scope}
            ORDER BY learner_id, skill_id
            LIMIT {{limit:UInt32}}
            """,
            {
                **parameters,
                "tenant": tenant_id,
                "class": class_id,
                "after_learner": after_learner,
                "after_skill": after_skill,
                "limit": limit,
            },
        )
        return [
            HeatmapCell(
                learner_id=str(learner), skill_id=str(skill), p_mastered=float(p), level=int(level)
            )
            for learner, skill, p, level in rows
        ]

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

    def erased_learners(self) -> set[tuple[str, str]]:
        rows = self._query("SELECT DISTINCT tenant_id, learner_id FROM {db}.erased_learners")
        return {(str(tenant), str(learner)) for tenant, learner in rows}

    def erase_learner(self, tenant_id: str, learner_id: str) -> None:
        for table in LEARNER_TABLES:
            try:
                self.client.command(
                    self._sql(
                        f"DELETE FROM {{db}}.{table} "
                        "WHERE tenant_id = {tenant:String} AND learner_id = {learner:String}"
                    ),
                    parameters={"tenant": tenant_id, "learner": learner_id},
                    settings=_DELETE_SETTINGS,
                )
            except ClickHouseError as exc:
                raise StoreError(f"erasure from {table} failed: {exc}") from exc


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


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}")
