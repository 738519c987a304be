"""The reporting store contract: one suite, run against every adapter (STYLE.md §1).

chDB runs always (a fresh path per test). A ClickHouse server runs when TRELLIS_CLICKHOUSE__URL
names one (a fresh database per test, dropped afterwards); otherwise that case is skipped.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from trellis.common.pb.events.v1 import activity_pb2, envelope_pb2, mastery_pb2
from trellis.common.settings import Settings
from trellis.reporting.rows import (
    ACTIVITY,
    MASTERY_HISTORY,
    MASTERY_LATEST,
    Position,
    Row,
    activity_rows,
    mastery_rows,
)
from trellis.reporting.store.base import ReportingStore, StoreError, StoreStatus, Target
from trellis.reporting.store.chdb import ChdbStore
from trellis.reporting.store.clickhouse import ClickHouseStore
from trellis.reporting.store.migrations import MIGRATIONS

MASTERY_TOPIC = "contract.trellis.mastery.v1"
ACTIVITY_TOPIC = "contract.trellis.activity.v1"
T0 = datetime(2025, 9, 1, 8, 0, tzinfo=UTC)
PRACTICING = mastery_pb2.MASTERY_LEVEL_PRACTICING
MASTERED = mastery_pb2.MASTERY_LEVEL_MASTERED


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def mastery(
    offset: int,
    learner: str,
    skill: str,
    p: float,
    *,
    tenant: str = "district-a",
    class_id: str = "class-1",
    partition: int = 0,
    level: int = PRACTICING,
) -> list[tuple[str, Row]]:
    envelope = envelope_pb2.Envelope(
        event_id=f"mu-{partition}-{offset}",
        tenant_id=tenant,
        school_id="school-1",
        class_id=class_id,
        learner_id=learner,
        occurred_at=_ts(T0 + timedelta(minutes=offset)),
        ingested_at=_ts(T0 + timedelta(minutes=offset, seconds=1)),
        mastery_updated=mastery_pb2.MasteryUpdated(
            skill_id=skill, p_before=0.1, p_after=p, level=level, attempts=offset + 1
        ),
    )
    return mastery_rows(envelope, Position(MASTERY_TOPIC, partition, offset))


def attempt(offset: int, learner: str, *, tenant: str = "district-a", partition: int = 0) -> Row:
    envelope = envelope_pb2.Envelope(
        event_id=f"ia-{partition}-{offset}",
        tenant_id=tenant,
        school_id="school-1",
        class_id="class-1",
        learner_id=learner,
        occurred_at=_ts(T0 + timedelta(minutes=offset)),
        item_attempted=activity_pb2.ItemAttempted(item_id="item-1", skill_ids=["s1"], correct=True),
    )
    [(_, row)] = activity_rows(envelope, Position(ACTIVITY_TOPIC, partition, offset))
    return row


def by_table(*events: list[tuple[str, Row]]) -> dict[str, list[Row]]:
    tables: dict[str, list[Row]] = defaultdict(list)
    for pairs in events:
        for table, row in pairs:
            tables[table].append(row)
    return tables


def insert_all(store: ReportingStore, tables: dict[str, list[Row]], token: str) -> None:
    for table, rows in tables.items():
        store.insert(table, rows, f"{token}/{table}")


class ReportingStoreContract:
    """Cases every reporting store passes; subclasses provide `make_store`."""

    def make_store(self, tmp_path: Path) -> ReportingStore:
        raise NotImplementedError

    @pytest.fixture
    def fresh(self, tmp_path: Path) -> Iterator[ReportingStore]:
        store = self.make_store(tmp_path)
        try:
            yield store
        finally:
            self.dispose(store)

    @pytest.fixture
    def store(self, fresh: ReportingStore) -> ReportingStore:
        fresh.migrate()
        return fresh

    def dispose(self, store: ReportingStore) -> None:
        store.close()

    # --- migrations ---

    def test_migrations_apply_once_and_make_the_store_ready(self, fresh: ReportingStore) -> None:
        assert fresh.status() is not StoreStatus.OK

        first = fresh.migrate()
        second = fresh.migrate()

        assert first == [1, 2, 3, 4, 5]
        assert second == []
        assert fresh.status() is StoreStatus.OK
        assert set(fresh.row_counts("district-a").values()) == {0}

    def test_a_migration_redone_after_a_crash_is_harmless(self, store: ReportingStore) -> None:
        # A start that died after a migration's statements, before recording it, redoes them.
        assert isinstance(store, ClickHouseStore)
        for statement in MIGRATIONS[-1].statements:
            store._command(statement)
        indexes = store.client.query(
            "SELECT table, name FROM system.data_skipping_indices WHERE database = {db:String}"
            " ORDER BY table, name",
            parameters={"db": store.database},
        ).result_rows
        assert [tuple(row) for row in indexes] == [
            ("engagement_daily", "class_bloom"),
            ("mastery_latest", "learner_bloom"),
        ]

    def test_migrations_keep_existing_rows(self, store: ReportingStore) -> None:
        insert_all(store, by_table(mastery(0, "l1", "s1", 0.3)), "t")

        assert store.migrate() == []
        assert store.row_counts("district-a")[MASTERY_HISTORY] == 1

    # --- inserts and deduplication ---

    def test_same_token_batch_inserted_twice_is_counted_once(self, store: ReportingStore) -> None:
        batch = by_table(*(mastery(i, f"l{i % 3}", f"s{i % 2}", 0.1 * (i % 9)) for i in range(20)))
        activity = [attempt(i, f"l{i % 3}") for i in range(30)]

        for _ in range(2):
            insert_all(store, batch, "mastery:0:0-19")
            store.insert(ACTIVITY, activity, "activity:0:0-29")

        counts = store.row_counts("district-a")
        assert counts[MASTERY_HISTORY] == 20
        assert counts[ACTIVITY] == 30
        assert counts[MASTERY_LATEST] == 6  # 3 learners x 2 skills

    def test_a_new_token_is_a_new_batch(self, store: ReportingStore) -> None:
        rows = [attempt(i, "l1") for i in range(5)]

        store.insert(ACTIVITY, rows, "first")
        store.insert(ACTIVITY, rows, "second")

        # Deduplication is by token, not by content: the sink's positions keep content unique.
        assert store.row_counts("district-a")[ACTIVITY] == 10

    def test_positions_are_the_highest_stored_offset_per_partition(
        self, store: ReportingStore
    ) -> None:
        insert_all(
            store,
            by_table(
                mastery(5, "l1", "s1", 0.2, partition=0),
                mastery(9, "l2", "s1", 0.2, partition=0),
                mastery(3, "l3", "s1", 0.2, partition=1),
            ),
            "t",
        )

        assert store.positions([MASTERY_HISTORY, MASTERY_LATEST, ACTIVITY]) == {
            MASTERY_HISTORY: {(MASTERY_TOPIC, 0): 9, (MASTERY_TOPIC, 1): 3},
            MASTERY_LATEST: {(MASTERY_TOPIC, 0): 9, (MASTERY_TOPIC, 1): 3},
            ACTIVITY: {},
        }

    def test_unknown_tables_are_refused(self, store: ReportingStore) -> None:
        with pytest.raises(ValueError, match="unknown table"):
            store.insert("system.users", [{"a": 1}], "t")

    # --- latest mastery ---

    def test_latest_keeps_the_newest_update_per_learner_and_skill(
        self, store: ReportingStore
    ) -> None:
        insert_all(store, by_table(mastery(0, "l1", "s1", 0.2), mastery(1, "l1", "s2", 0.3)), "a")
        insert_all(
            store,
            by_table(mastery(2, "l1", "s1", 0.97, level=MASTERED), mastery(3, "l2", "s1", 0.5)),
            "b",
        )

        progress = store.learner_progress("district-a", "l1")
        heatmap = store.class_heatmap("district-a", "class-1", limit=100)

        assert [(p.skill_id, p.p_mastered, p.level, p.attempts) for p in progress] == [
            ("s1", 0.97, MASTERED, 3),
            ("s2", 0.3, PRACTICING, 2),
        ]
        assert progress[0].updated_at == T0 + timedelta(minutes=2)
        assert progress[0].updated_at.tzinfo is not None
        assert [(c.learner_id, c.skill_id, c.p_mastered) for c in heatmap.cells] == [
            ("l1", "s1", 0.97),
            ("l1", "s2", 0.3),
            ("l2", "s1", 0.5),
        ]
        # No roster here: the class's learners are those with evidence in it.
        assert heatmap.learner_ids == ["l1", "l2"]
        assert store.row_counts("district-a")[MASTERY_LATEST] == 3
        assert store.row_counts("district-a")[MASTERY_HISTORY] == 4

    def test_latest_is_ordered_by_offset_not_by_insert_order(self, store: ReportingStore) -> None:
        # A late insert of an older update (a replay of an earlier range) must not win.
        insert_all(store, by_table(mastery(8, "l1", "s1", 0.9)), "newer")
        insert_all(store, by_table(mastery(4, "l1", "s1", 0.2)), "older")

        [progress] = store.learner_progress("district-a", "l1")
        [cell] = store.class_heatmap("district-a", "class-1", limit=10).cells
        # The superseded 0.2 is no low mastery (the filter comes after deduplication).
        needs = store.needs_support(
            Target("district-a", class_id="class-1"),
            since=T0,
            until=T0 + timedelta(days=1),
            low_p=0.4,
            min_attempts=1,
            min_events=0,
            limit=10,
        )

        assert progress.p_mastered == cell.p_mastered == 0.9
        assert needs == []

    def test_learner_progress_takes_the_newest_value_across_classes(
        self, store: ReportingStore
    ) -> None:
        insert_all(
            store,
            by_table(
                mastery(1, "l1", "s1", 0.4, class_id="math-a"),
                mastery(6, "l1", "s1", 0.8, class_id="math-club"),
            ),
            "t",
        )

        [progress] = store.learner_progress("district-a", "l1")
        [in_class] = store.class_heatmap("district-a", "math-a", limit=10).cells

        assert progress.p_mastered == 0.8
        # The class heatmap shows the evidence gathered in that class.
        assert in_class.p_mastered == 0.4

    def test_scope_limits_rows_to_a_callers_classes_and_schools(
        self, store: ReportingStore
    ) -> None:
        insert_all(
            store,
            by_table(
                mastery(1, "l1", "s1", 0.4, class_id="math-a"),
                mastery(6, "l1", "s2", 0.8, class_id="art-b"),
            ),
            "t",
        )

        def skills(**scope: list[str]) -> list[str]:
            return [p.skill_id for p in store.learner_progress("district-a", "l1", **scope)]

        assert skills() == ["s1", "s2"]
        assert skills(classes=["math-a"]) == ["s1"]
        assert skills(classes=[]) == []
        assert skills(schools=["school-1"]) == ["s1", "s2"]
        assert skills(schools=["school-2"]) == []
        assert len(store.class_heatmap("district-a", "math-a", 10, schools=["school-1"]).cells) == 1
        assert store.class_heatmap("district-a", "math-a", 10, schools=["school-2"]).cells == []

    def test_heatmap_pages_by_learner_and_skill(self, store: ReportingStore) -> None:
        events = [
            mastery(i, f"l{i // 3}", f"s{i % 3}", 0.1 + 0.01 * i) for i in range(12)
        ]  # 4 learners x 3 skills
        insert_all(store, by_table(*events), "t")

        pages, after = [], None
        while True:
            page = store.class_heatmap("district-a", "class-1", limit=5, after=after).cells
            pages.append(page)
            if len(page) < 5:
                break
            after = (page[-1].learner_id, page[-1].skill_id)

        cells = [(c.learner_id, c.skill_id) for page in pages for c in page]
        assert [len(page) for page in pages] == [5, 5, 2]
        assert cells == sorted(cells)
        assert len(set(cells)) == 12

    def test_every_query_is_scoped_to_one_tenant(self, store: ReportingStore) -> None:
        insert_all(store, by_table(mastery(0, "l1", "s1", 0.3, tenant="district-a")), "a")
        insert_all(store, by_table(mastery(1, "l1", "s1", 0.9, tenant="district-b")), "b")
        store.insert(ACTIVITY, [attempt(0, "l1", tenant="district-b")], "c")

        assert [p.p_mastered for p in store.learner_progress("district-a", "l1")] == [0.3]
        heatmap = store.class_heatmap("district-a", "class-1", 10)
        assert [c.p_mastered for c in heatmap.cells] == [0.3]
        counts = store.row_counts("district-a")
        assert (counts[ACTIVITY], counts[MASTERY_HISTORY], counts[MASTERY_LATEST]) == (0, 1, 1)
        assert store.learner_progress("district-c", "l1") == []
        assert store.class_heatmap("district-c", "class-1", 10).cells == []

    def test_a_closed_store_refuses_work(self, fresh: ReportingStore) -> None:
        fresh.migrate()
        fresh.close()

        with pytest.raises(StoreError):
            fresh.row_counts("district-a")


class TestChdbStore(ReportingStoreContract):
    def make_store(self, tmp_path: Path) -> ReportingStore:
        return ChdbStore(tmp_path / "chdb", "trellis_contract")

    def test_data_survives_reopening_the_path(self, tmp_path: Path) -> None:
        first = self.make_store(tmp_path)
        first.migrate()
        insert_all(first, by_table(mastery(0, "l1", "s1", 0.3)), "t")
        first.close()

        second = self.make_store(tmp_path)
        try:
            assert second.migrate() == []
            # the deduplication window survives too
            insert_all(second, by_table(mastery(0, "l1", "s1", 0.3)), "t")
            assert second.row_counts("district-a")[MASTERY_HISTORY] == 1
        finally:
            second.close()


_SERVER_URL = Settings().clickhouse.url

if _SERVER_URL:

    class TestClickHouseServerStore(ReportingStoreContract):
        def make_store(self, tmp_path: Path) -> ReportingStore:
            assert _SERVER_URL is not None
            return ClickHouseStore(_SERVER_URL, f"trellis_contract_{uuid.uuid4().hex[:12]}")

        def dispose(self, store: ReportingStore) -> None:
            assert isinstance(store, ClickHouseStore) and _SERVER_URL is not None
            store.close()
            admin = ClickHouseStore(_SERVER_URL, store.database)
            try:
                admin.client.command(f"DROP DATABASE IF EXISTS {store.database}")
            finally:
                admin.close()

else:

    @pytest.mark.skip(
        reason="no ClickHouse server: set TRELLIS_CLICKHOUSE__URL to run this adapter"
    )
    def test_clickhouse_server_store() -> None:
        """Stands for the server adapter's run of the contract suite."""
