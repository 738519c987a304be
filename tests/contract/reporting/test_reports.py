"""Report queries on the small known district of `dataset.py`, with hand-checked answers.

One contract for every store adapter: chDB always, a ClickHouse server when
TRELLIS_CLICKHOUSE__URL is set. The dataset is loaded once per class (the queries only read);
erasure runs on a store of its own.
"""

from __future__ import annotations

import uuid
from collections import namedtuple
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from pytest import approx

from tests.contract.reporting import dataset
from tests.contract.reporting.dataset import AS_OF, OTHER, SINCE, TENANT, at
from trellis.common.pb.events.v1 import roster_pb2
from trellis.common.settings import Settings
from trellis.reporting.rows import ActivityRow, EnrollmentRow
from trellis.reporting.store.base import HeatmapRows, ReportingStore, Target
from trellis.reporting.store.chdb import ChdbStore
from trellis.reporting.store.clickhouse import ClickHouseStore

C1 = Target(TENANT, class_id="c1")
SCHOOL_N = Target(TENANT, school_id="school-n")


def support(store: ReportingStore, target: Target = C1, **kw: object) -> list[tuple[object, ...]]:
    args: dict[str, object] = {
        "since": SINCE,
        "until": AS_OF,
        "low_p": 0.4,
        "min_attempts": 3,
        "min_events": 3,
        "limit": 100,
    }
    args.update(kw)
    rows = store.needs_support(target, **args)  # type: ignore[arg-type]
    return [(r.learner_id, r.reason, r.skill_id, r.value, r.detail) for r in rows]


class ReportsContract:
    @classmethod
    def make_store(cls, path: Path) -> ReportingStore:
        raise NotImplementedError

    @classmethod
    def dispose(cls, store: ReportingStore) -> None:
        store.close()

    @pytest.fixture(scope="class")
    @classmethod
    def store(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReportingStore]:
        store = cls.make_store(tmp_path_factory.mktemp("reports"))
        store.migrate()
        dataset.load(store)
        try:
            yield store
        finally:
            cls.dispose(store)

    # --- who needs support, who is ready ---

    def test_needs_support_names_each_learner_with_every_reason(
        self, store: ReportingStore
    ) -> None:
        assert support(store) == [
            ("n02", "low_mastery", "add", 0.2, ""),
            ("n02", "struggling", "add", 6.0, "repeated_error:sign"),
            ("n03", "low_engagement", "", 2.0, ""),
            ("n05", "low_engagement", "", 0.0, ""),
        ]

    def test_needs_support_pages_by_learner_and_follows_the_thresholds(
        self, store: ReportingStore
    ) -> None:
        first = support(store, limit=1)
        rest = support(store, limit=1, after="n02")
        # n02's two reasons stay on one page.
        assert [r[0] for r in first] == ["n02", "n02"]
        assert [r[0] for r in rest] == ["n03"]
        # sub 0.3 after 2 attempts counts once 2 attempts are enough.
        assert ("n02", "low_mastery", "sub", 0.3, "") in support(store, min_attempts=2)
        # Past the roster's last learner, n06 (active in c1 long ago, not enrolled) stays out.
        assert support(store, after="n05") == []

    def test_ready_to_accelerate_is_by_id_not_by_score(self, store: ReportingStore) -> None:
        ready = store.ready_to_accelerate(
            C1, since=SINCE, until=AS_OF, mastered_share=0.8, min_skills=3, limit=10
        )
        # n04's struggling was before the window; n03 has 2 of 3 mastered.
        assert [(r.learner_id, r.skills_started, r.skills_mastered) for r in ready] == [
            ("n01", 3, 3),
            ("n04", 3, 3),
        ]
        earlier = store.ready_to_accelerate(
            C1,
            since=at(19, month=8),
            until=AS_OF,
            mastered_share=0.6,
            min_skills=3,
            limit=10,
        )
        assert [r.learner_id for r in earlier] == ["n01", "n03"]

    # --- skill gaps, engagement, errors, growth ---

    def test_skill_gaps_of_a_class(self, store: ReportingStore) -> None:
        gaps = store.skill_gaps(C1, low_p=0.4, limit=10)
        assert [(g.skill_id, g.learners, g.below, g.mastered) for g in gaps] == [
            ("add", 4, 1, 3),
            ("mul", 3, 0, 2),
            ("sub", 4, 1, 3),
        ]
        assert [g.mean_mastery for g in gaps] == [
            approx((0.97 + 0.2 + 0.97 + 0.96) / 4),
            approx((0.95 + 0.6 + 0.96) / 3),
            approx((0.96 + 0.3 + 0.97 + 0.96) / 4),
        ]
        assert [
            g.skill_id for g in store.skill_gaps(SCHOOL_N, low_p=0.4, limit=1, after="add")
        ] == ["mul"]

    def test_engagement_per_learner_and_day(self, store: ReportingStore) -> None:
        days = store.engagement(C1, since=date(2025, 9, 10), until=date(2025, 9, 15), limit=100)
        assert [
            (
                d.learner_id,
                d.day,
                d.events,
                d.attempts,
                d.correct,
                d.attempt_seconds,
                d.resources,
                d.resource_seconds,
            )
            for d in days
        ] == [
            ("n01", date(2025, 9, 11), 1, 0, 0, 0.0, 0, 0.0),
            ("n01", date(2025, 9, 14), 3, 3, 3, 180.0, 0, 0.0),
            ("n02", date(2025, 9, 10), 1, 0, 0, 0.0, 0, 0.0),
            ("n02", date(2025, 9, 13), 4, 4, 1, 120.0, 0, 0.0),
            ("n03", date(2025, 9, 14), 2, 1, 1, 45.0, 1, 300.0),
            ("n04", date(2025, 9, 12), 3, 3, 3, 60.0, 0, 0.0),
        ]
        page = store.engagement(
            C1,
            since=date(2025, 9, 1),
            until=date(2025, 9, 16),
            limit=2,
            after=("n01", date(2025, 9, 14)),
        )
        assert [(d.learner_id, d.day) for d in page] == [
            ("n02", date(2025, 9, 10)),
            ("n02", date(2025, 9, 13)),
        ]
        one = store.engagement(
            C1, since=date(2025, 9, 1), until=date(2025, 9, 16), learner_id="n03", limit=10
        )
        assert [(d.day, d.attempts) for d in one] == [
            (date(2025, 9, 1), 2),
            (date(2025, 9, 14), 1),
        ]

    def test_error_types_per_skill(self, store: ReportingStore) -> None:
        window = store.error_breakdown(C1, since=SINCE, until=AS_OF, limit=10)
        whole = store.error_breakdown(C1, since=at(1, 0), until=AS_OF, limit=10)
        sub = store.error_breakdown(C1, since=at(1, 0), until=AS_OF, skill_id="sub", limit=10)

        assert [(e.skill_id, e.error_tag, e.attempts, e.learners) for e in window] == [
            ("add", "carry", 1, 1),
            ("add", "sign", 2, 1),
        ]
        assert [(e.skill_id, e.error_tag, e.attempts) for e in whole] == [
            ("add", "carry", 1),
            ("add", "sign", 2),
            ("sub", "carry", 2),
        ]
        assert [(e.skill_id, e.error_tag) for e in sub] == [("sub", "carry")]

    def test_growth_over_a_period(self, store: ReportingStore) -> None:
        growth = store.growth(C1, since=at(8, 0), until=AS_OF, limit=100)
        rows = {(g.learner_id, g.skill_id): (g.p_start, g.p_end, g.updates) for g in growth}

        assert len(rows) == 10  # n03's mul moved before the period
        assert rows[("n02", "add")] == (0.15, 0.2, 1)
        assert rows[("n01", "add")] == (0.3, 0.97, 1)
        assert ("n03", "mul") not in rows
        pages = [
            store.growth(C1, since=at(8, 0), until=AS_OF, limit=4, after=after)
            for after in (None, ("n02", "add"))
        ]
        assert [(g.learner_id, g.skill_id) for g in pages[1]] == [
            ("n02", "sub"),
            ("n03", "add"),
            ("n03", "sub"),
            ("n04", "add"),
        ]

    # --- a learner ---

    def test_timeline_of_a_learner(self, store: ReportingStore) -> None:
        entries = store.timeline(TENANT, "n02", since=at(1, 0), until=AS_OF, limit=100)

        assert [(e.occurred_at, e.kind, e.skill_ids, e.score, e.detail) for e in entries] == [
            (at(10, 8), "goal_set", ["add"], None, ""),
            (at(13, 10, 0), "item_attempted", ["add"], 0.0, "sign"),
            (at(13, 10, 1), "item_attempted", ["add"], 0.0, "sign"),
            (at(13, 10, 2), "item_attempted", ["add"], 0.0, "carry"),
            (at(13, 10, 3), "item_attempted", ["add"], 1.0, ""),
            (at(13, 10, 4), "struggling_detected", ["add"], 0.0, "repeated_error:sign"),
        ]
        second = store.timeline(
            TENANT,
            "n02",
            since=at(1, 0),
            until=AS_OF,
            limit=2,
            after=(entries[1].occurred_at, entries[1].event_id),
        )
        assert [e.occurred_at for e in second] == [at(13, 10, 1), at(13, 10, 2)]
        assert store.timeline(TENANT, "n02", since=at(1, 0), until=AS_OF, limit=9, classes=[]) == []

    def test_goals_of_a_learner(self, store: ReportingStore) -> None:
        goals = store.learner_goals(TENANT, "n02")
        assert [(g.goal_id, g.skill_id, g.target_date, g.set_at) for g in goals] == [
            ("g1", "add", "2025-10-01", at(10, 8))
        ]
        assert [g.skill_id for g in store.learner_goals(TENANT, "n01")] == ["div"]

    def test_goals_and_reflections_of_a_class(self, store: ReportingStore) -> None:
        rows = store.class_goals(C1, limit=10)

        assert [
            (
                r.learner_id,
                [(g.goal_id, g.skill_id, g.target_date, p, level) for g, p, level in r.goals],
                [
                    (x.reflection_id, x.skill_id, x.confidence, x.submitted_at)
                    for x in r.reflections
                ],
            )
            for r in rows
        ] == [
            ("n01", [("g2", "div", "", 0.0, 0)], []),
            ("n02", [("g1", "add", "2025-10-01", 0.2, 2)], [("r1", "add", 0.4, at(16, 9))]),
            ("n04", [], [("r2", "mul", None, at(16, 9))]),
        ]
        assert [r.learner_id for r in store.class_goals(C1, limit=1, after="n01")] == ["n02"]
        assert store.class_goals(C1, limit=10, schools=["school-s"]) == []

    # --- district rollups (unsuppressed figures; suppression is applied by the service) ---

    def test_rollups_group_the_active_roster(self, store: ReportingStore) -> None:
        north_mean = (0.96 + 0.25 + (0.97 + 0.97 + 0.6) / 3 + 0.96) / 16
        north_share = (1 + 0 + 2 / 3 + 1) / 16

        schools = store.rollup(TENANT, "school")
        grades = store.rollup(TENANT, "grade")
        subgroups = store.rollup(TENANT, "subgroup")

        assert [(k, n) for k, n, _, _ in schools.groups] == [
            ("school-e", 11),
            ("school-n", 16),
            ("school-s", 9),
        ]
        assert schools.groups[1][2:] == (approx(north_mean), approx(north_share))
        assert schools.groups[0][2:] == (0.0, 0.0)
        assert schools.total[0] == grades.total[0] == subgroups.total[0] == 36
        assert schools.total[1] == approx(north_mean * 16 / 36)
        assert [(k, n) for k, n, _, _ in grades.groups] == [("3", 2), ("4", 21), ("5", 13)]
        assert [(k, n) for k, n, _, _ in subgroups.groups] == [
            ("ell", 12),
            ("frl", 30),
            ("iep", 5),
        ]

    def test_a_skill_filter_changes_the_figures_never_the_groups(
        self, store: ReportingStore
    ) -> None:
        every = store.rollup(TENANT, "school")
        mul = store.rollup(TENANT, "school", skill_id="mul")

        assert [g[:2] for g in mul.groups] == [g[:2] for g in every.groups]
        assert mul.groups[1][2:] == (approx((0.95 + 0.6 + 0.96) / 16), approx(2 / 16))

    def test_rollups_of_a_scoped_admin_cover_their_schools(self, store: ReportingStore) -> None:
        scoped = store.rollup(TENANT, "grade", schools=["school-s", "school-e"])
        assert [(k, n) for k, n, _, _ in scoped.groups] == [("3", 2), ("4", 9), ("5", 9)]
        assert scoped.total[0] == 20

    # --- tenants and scopes ---

    def test_nothing_of_another_tenant_shows(self, store: ReportingStore) -> None:
        other = Target(OTHER, class_id="c1")
        assert store.rollup(OTHER, "school").total[0] == 1
        assert [g.mean_mastery for g in store.skill_gaps(other, low_p=0.4, limit=10)] == [0.1]
        assert [
            e.error_tag for e in store.error_breakdown(other, since=SINCE, until=AS_OF, limit=9)
        ] == ["sign"]
        assert store.learner_goals(OTHER, "n02") == []
        # district-b's class has no roster: its population is who was active there.
        assert support(store, other) == [("n01", "low_engagement", "", 1.0, "")]
        # and the other way round: district-a's n01 has no "sign" error
        assert ("n01", "add") not in {
            (e.skill_id, e.error_tag)
            for e in store.error_breakdown(C1, since=SINCE, until=AS_OF, limit=9)
        }

    def test_a_scope_limits_every_report(self, store: ReportingStore) -> None:
        # A caller scoped to school-s (or to class c2) sees nothing of class c1.
        assert support(store, schools=["school-s"]) == []
        assert support(store, classes=["c2"]) == []
        assert store.skill_gaps(C1, low_p=0.4, limit=9, schools=["school-s"]) == []
        assert (
            store.engagement(
                C1, since=date(2025, 9, 1), until=date(2025, 9, 16), limit=9, classes=["c2"]
            )
            == []
        )
        assert store.growth(C1, since=at(8, 0), until=AS_OF, limit=9, schools=["school-s"]) == []
        assert len(support(store, schools=["school-n"], classes=["c1"])) == 4
        # A teacher's view of their school: their classes' learners, enrolled ones included.
        assert [r[:2] for r in support(store, SCHOOL_N, classes=["c1"])] == [
            ("n02", "low_mastery"),
            ("n02", "struggling"),
            ("n03", "low_engagement"),
            ("n05", "low_engagement"),
        ]

    # --- roster scope of a learner ---

    def test_a_learner_is_enrolled_in_the_roster_s_classes_and_their_schools(
        self, store: ReportingStore
    ) -> None:
        # n01 is enrolled in c1, which the roster places in school-n.
        assert store.learner_enrolled(TENANT, "n01", classes=["c2", "c1"])
        assert store.learner_enrolled(TENANT, "n01", schools=["school-n"])
        assert store.learner_enrolled(TENANT, "n01", classes=["c1"], schools=["school-n"])
        assert store.learner_enrolled(TENANT, "n01")
        assert not store.learner_enrolled(TENANT, "n01", classes=["c2"])
        assert not store.learner_enrolled(TENANT, "n01", schools=["school-s", "school-e"])
        assert not store.learner_enrolled(TENANT, "n01", classes=[])
        # s01 is on the roster of school-s but enrolled in no class; t1 teaches c1.
        assert not store.learner_enrolled(TENANT, "s01", schools=["school-s"])
        assert not store.learner_enrolled(TENANT, "t1", classes=["c1"])
        # Another tenant's n01 and an unknown learner.
        assert not store.learner_enrolled(OTHER, "n01", classes=["c1"])
        assert not store.learner_enrolled(TENANT, "nobody", classes=["c1"], timeout_s=5)


class TestChdbReports(ReportsContract):
    @classmethod
    def make_store(cls, path: Path) -> ReportingStore:
        return ChdbStore(path / "chdb", "trellis_reports")


def test_erasure_removes_the_learner_from_every_table_and_rollup(tmp_path: Path) -> None:
    store = ChdbStore(tmp_path / "chdb", "trellis_erasure")
    try:
        store.migrate()
        dataset.load(store)
        before = store.row_counts(TENANT)

        store.erase_learners(TENANT, ["n02"])
        store.erase_learners(TENANT, ["n02", "nobody"])  # idempotent
        store.erase_learners(TENANT, [])

        after = store.row_counts(TENANT)
        for table in (
            "activity",
            "mastery_history",
            "mastery_latest",
            "mastery_events",
            "engagement_daily",
            "learner_goals",
            "roster_learners",
            "roster_enrollments",
            "roster_class_enrollments",
        ):
            left = store.client.query(
                f"SELECT count() FROM trellis_erasure.{table} WHERE learner_id = 'n02'"
            ).result_rows[0][0]
            assert left == 0, table
        assert before["activity"] - after["activity"] == 6
        assert before["mastery_history"] - after["mastery_history"] == 3
        assert before["learner_goals"] - after["learner_goals"] == 1
        assert store.rollup(TENANT, "school").total[0] == 35
        assert [r[0] for r in support(store)] == ["n03", "n05"]
        # Other tenants' n02 (none) and other learners are untouched.
        assert store.rollup(OTHER, "school").total[0] == 1
    finally:
        store.close()


def test_an_ended_enrollment_and_a_moved_class_end_the_scope(tmp_path: Path) -> None:
    store = ChdbStore(tmp_path / "chdb", "trellis_enrolled")
    try:
        store.migrate()
        dataset.load(store)
        later = dataset.Builder()
        later.offsets[dataset.ROSTER_TOPIC] = 1_000  # after the dataset on the roster topic
        later.tombstone(TENANT, "enrollment", "en-n01")
        later.roster(
            TENANT, "school_class", roster_pb2.SchoolClass(sourced_id="c1", school_id="school-s")
        )
        for table, rows in later.tables.items():
            store.insert(table, rows, f"later/{table}")

        assert not store.learner_enrolled(TENANT, "n01", classes=["c1"])
        assert store.learner_enrolled(TENANT, "n02", classes=["c1"])
        assert not store.learner_enrolled(TENANT, "n02", schools=["school-n"])
        assert store.learner_enrolled(TENANT, "n02", schools=["school-s"])
    finally:
        store.close()


def test_a_class_s_members_are_its_enrollments_newest_versions(tmp_path: Path) -> None:
    # After the dataset, each change in a part of its own: en-n01 ends (a tombstone), en-n03
    # moves to c2, en-n05 moves to c2 and back, en-n02 ends and is enrolled again, n08 is
    # enrolled in c2 and moved to c3.
    store = ChdbStore(tmp_path / "chdb", "trellis_class_members")
    try:
        store.migrate()
        dataset.load(store)
        later = dataset.Builder()
        later.offsets[dataset.ROSTER_TOPIC] = 1_000

        def enrol(enrollment: str, learner: str, class_id: str) -> None:
            entity = roster_pb2.Enrollment(
                sourced_id=enrollment, class_id=class_id, user_id=learner, role="learner"
            )
            later.roster(TENANT, "enrollment", entity)

        later.tombstone(TENANT, "enrollment", "en-n01")
        enrol("en-n03", "n03", "c2")
        enrol("en-n05", "n05", "c2")
        enrol("en-n05", "n05", "c1")
        later.tombstone(TENANT, "enrollment", "en-n02")
        enrol("en-n02", "n02", "c1")
        enrol("en-n08", "n08", "c2")
        enrol("en-n08", "n08", "c3")
        for table, rows in later.tables.items():
            for i, row in enumerate(rows):
                store.insert(table, [row], f"later/{table}/{i}")

        members = {c: store.class_heatmap(TENANT, c, 100).learner_ids for c in ("c1", "c2", "c3")}
        assert members == {"c1": ["n02", "n04", "n05"], "c2": ["n03"], "c3": ["n08"]}
        # A class an enrollment left keeps a tombstone of it.
        by_class = store.client.query(
            "SELECT class_id, enrollment_id, learner_id, deleted"
            " FROM trellis_class_members.roster_class_enrollments FINAL"
            " WHERE tenant_id = {t:String} ORDER BY class_id, enrollment_id",
            parameters={"t": TENANT},
        ).result_rows
        assert [tuple(row) for row in by_class] == [
            ("c1", "en-n01", "", 1),
            ("c1", "en-n02", "n02", 0),
            ("c1", "en-n03", "n03", 1),
            ("c1", "en-n04", "n04", 0),
            ("c1", "en-n05", "n05", 0),
            ("c1", "en-t1", "t1", 0),
            ("c2", "en-n03", "n03", 0),
            ("c2", "en-n05", "n05", 1),
            ("c2", "en-n08", "n08", 1),
            ("c3", "en-n08", "n08", 0),
        ]
        # A teacher of c1 and c2 (n03: enrolled in c2, no activity there), and the learner
        # scope of callers with classes or schools.
        c2 = Target(TENANT, class_id="c2")
        assert support(store, c2, classes=["c1", "c2"]) == [("n03", "low_engagement", "", 0, "")]
        assert [store.learner_enrolled(TENANT, "n03", classes=[c]) for c in ("c1", "c2")] == [
            False,
            True,
        ]
        assert [store.learner_enrolled(TENANT, "n05", classes=[c]) for c in ("c1", "c2")] == [
            True,
            False,
        ]
        assert not store.learner_enrolled(TENANT, "n01", classes=["c1"])
        assert store.learner_enrolled(TENANT, "n08", schools=["school-n"]) is False  # c3: no school
    finally:
        store.close()


def test_the_class_keyed_roster_follows_each_partition_s_offsets(tmp_path: Path) -> None:
    # Roster records of two partitions, inserted one by one; a store opened afresh (its offsets
    # per partition read back from the table) catches up from where the table is.
    def enrollment(partition: int, offset: int, enrollment_id: str, learner: str, class_id: str):
        return EnrollmentRow(
            TENANT, enrollment_id, 0, class_id, learner, "learner", "", "r", partition, offset
        )

    path = tmp_path / "chdb"
    store = ChdbStore(path, "trellis_partitions")
    try:
        store.migrate()
        for i, row in enumerate(
            [
                enrollment(0, 0, "e1", "a", "c1"),
                enrollment(1, 0, "e2", "b", "c1"),
                enrollment(0, 1, "e1", "a", "c2"),
            ]
        ):
            store.insert("roster_enrollments", [row], f"r/{i}")
        assert store.class_heatmap(TENANT, "c1", 9).learner_ids == ["b"]
        assert store.class_heatmap(TENANT, "c2", 9).learner_ids == ["a"]
    finally:
        store.close()
    store = ChdbStore(path, "trellis_partitions")
    try:
        assert store.migrate() == []
        store.insert("roster_enrollments", [enrollment(1, 1, "e3", "c", "c1")], "r/3")
        store.insert("roster_enrollments", [enrollment(0, 2, "e1", "a", "c1")], "r/4")
        assert store.class_heatmap(TENANT, "c1", 9).learner_ids == ["a", "b", "c"]
        assert store.class_heatmap(TENANT, "c2", 9).learner_ids == []
    finally:
        store.close()


def test_enrollments_stored_without_their_catch_up_are_caught_up_at_start(
    tmp_path: Path,
) -> None:
    # A process that died between inserting enrollments and keeping the class-keyed table:
    # the next start (migrate) catches up.
    store = ChdbStore(tmp_path / "chdb", "trellis_catch_up")
    try:
        store.migrate()
        dataset.load(store)
        later = dataset.Builder()
        later.offsets[dataset.ROSTER_TOPIC] = 1_000
        moved = roster_pb2.Enrollment(
            sourced_id="en-n03", class_id="c2", user_id="n03", role="learner"
        )
        later.roster(TENANT, "enrollment", moved)
        [row] = later.tables["roster_enrollments"]
        store.client.insert(
            "trellis_catch_up.roster_enrollments",
            [list(row)],
            column_names=list(row._fields),
            settings={"async_insert": 0},
        )
        assert "n03" in store.class_heatmap(TENANT, "c1", 100).learner_ids  # not caught up

        assert store.migrate() == []

        assert "n03" not in store.class_heatmap(TENANT, "c1", 100).learner_ids
        assert store.class_heatmap(TENANT, "c2", 100).learner_ids == ["n03"]
    finally:
        store.close()


def test_class_reports_follow_the_roster_s_current_enrollments(tmp_path: Path) -> None:
    # After the dataset: n04 (evidence in c1) leaves c1, n07 (no evidence) joins it, and n05
    # (enrolled in c1, no evidence there) practises div in c2, which the roster does not know.
    store = ChdbStore(tmp_path / "chdb", "trellis_members")
    try:
        store.migrate()
        dataset.load(store)
        later = dataset.Builder()
        later.offsets[dataset.ROSTER_TOPIC] = later.offsets[dataset.MASTERY_TOPIC] = 1_000
        later.tombstone(TENANT, "enrollment", "en-n04")
        later.roster(
            TENANT,
            "enrollment",
            roster_pb2.Enrollment(
                sourced_id="en-n07", class_id="c1", user_id="n07", role="learner"
            ),
        )
        later.mastery("n05", "div", 0.5, dataset.P, 4, at(12), class_id="c2")
        for table, rows in later.tables.items():
            store.insert(table, rows, f"later/{table}")

        heatmap = store.class_heatmap(TENANT, "c1", limit=100)
        assert heatmap.learner_ids == ["n01", "n02", "n03", "n05", "n07"]
        assert [(c.learner_id, c.skill_id, c.p_mastered) for c in heatmap.cells] == [
            ("n01", "add", 0.97),
            ("n01", "mul", 0.95),
            ("n01", "sub", 0.96),
            ("n02", "add", 0.2),
            ("n02", "sub", 0.3),
            ("n03", "add", 0.97),
            ("n03", "mul", 0.6),
            ("n03", "sub", 0.97),
        ]
        second = store.class_heatmap(TENANT, "c1", limit=3, after=("n01", "sub"))
        assert [(c.learner_id, c.skill_id) for c in second.cells] == [
            ("n02", "add"),
            ("n02", "sub"),
            ("n03", "add"),
        ]
        assert second.learner_ids == []  # first page only
        assert store.class_heatmap(TENANT, "c1", 9, schools=["school-n"]).learner_ids == [
            "n01",
            "n02",
            "n03",
            "n05",
            "n07",
        ]
        # An admin of other schools learns nothing of c1, not even who is in it.
        assert store.class_heatmap(TENANT, "c1", 9, schools=["school-s"]) == HeatmapRows([], [])
        # c2 has no roster: its learners are those with evidence there.
        c2 = store.class_heatmap(TENANT, "c2", 9)
        assert (c2.learner_ids, [(c.learner_id, c.skill_id) for c in c2.cells]) == (
            ["n05"],
            [("n05", "div")],
        )

        def gaps(target: Target, **scope: list[str]) -> list[tuple[object, ...]]:
            rows = store.skill_gaps(target, low_p=0.4, limit=10, **scope)
            return [(g.skill_id, g.learners, g.below, g.mastered, g.mean_mastery) for g in rows]

        class_gaps = [
            ("add", 3, 1, 2, approx((0.97 + 0.2 + 0.97) / 3)),
            ("mul", 2, 0, 1, approx((0.95 + 0.6) / 2)),
            ("sub", 3, 1, 2, approx((0.96 + 0.3 + 0.97) / 3)),
        ]
        assert gaps(C1) == class_gaps
        # The school: learners enrolled in a class of it (c1), with its rows (c2's included).
        assert gaps(SCHOOL_N) == [class_gaps[0], ("div", 1, 0, 0, 0.5), *class_gaps[1:]]
        # A teacher of c1 sees their class's rows of the school only.
        assert gaps(SCHOOL_N, classes=["c1"], schools=["school-n"]) == class_gaps

        growth = store.growth(C1, since=at(8, 0), until=AS_OF, limit=100)
        assert [(g.learner_id, g.skill_id, g.p_start, g.p_end, g.updates) for g in growth] == [
            ("n01", "add", 0.3, 0.97, 1),
            ("n01", "mul", 0.3, 0.95, 1),
            ("n01", "sub", 0.3, 0.96, 1),
            ("n02", "add", 0.15, 0.2, 1),
            ("n02", "sub", 0.3, 0.3, 1),
            ("n03", "add", 0.3, 0.97, 1),
            ("n03", "sub", 0.3, 0.97, 1),
        ]
        school_growth = store.growth(SCHOOL_N, since=at(8, 0), until=AS_OF, limit=100)
        assert ("n05", "div", 0.3, 0.5, 1) in [
            (g.learner_id, g.skill_id, g.p_start, g.p_end, g.updates) for g in school_growth
        ]
        assert "n04" not in {g.learner_id for g in school_growth}
    finally:
        store.close()


def test_a_retried_block_is_not_counted_twice_in_the_rollups(tmp_path: Path) -> None:
    store = ChdbStore(tmp_path / "chdb", "trellis_rollup_dedup")
    try:
        store.migrate()
        rows = dataset.build()["activity"]
        store.insert("activity", rows, "same-token")
        store.insert("activity", rows, "same-token")
        days = store.engagement(C1, since=date(2025, 9, 1), until=date(2025, 9, 17), limit=100)
        assert sum(d.events for d in days) == len([r for r in rows if r.tenant_id == TENANT])
    finally:
        store.close()


_SERVER_URL = Settings().clickhouse.url

if _SERVER_URL:

    class TestClickHouseServerReports(ReportsContract):
        @classmethod
        def make_store(cls, path: Path) -> ReportingStore:
            assert _SERVER_URL is not None
            return ClickHouseStore(_SERVER_URL, f"trellis_reports_{uuid.uuid4().hex[:12]}")

        @classmethod
        def dispose(cls, store: ReportingStore) -> None:
            assert isinstance(store, ClickHouseStore) and _SERVER_URL is not None
            store.close()
            admin = ClickHouseStore(_SERVER_URL, store.database)
            try:
                admin.client.command(f"DROP DATABASE IF EXISTS {store.database}")
            finally:
                admin.close()


def test_migration_2_starts_the_rollups_from_activity_stored_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trellis.reporting.store import clickhouse

    store = ChdbStore(tmp_path / "chdb", "trellis_upgrade")
    try:
        monkeypatch.setattr(clickhouse, "MIGRATIONS", clickhouse.MIGRATIONS[:1])
        assert store.migrate() == [1]
        new_columns = {"recommendation_id", "option_index", "target_date", "confidence"}
        # Activity rows as version 1 had them: without the columns version 2 added.
        v1_columns = [c for c in ActivityRow._fields if c not in new_columns]
        v1_row = namedtuple("v1_row", v1_columns)  # type: ignore[misc]
        rows = [
            v1_row(*(getattr(row, c) for c in v1_columns))
            for row in dataset.build()["activity"]
            if row.tenant_id == TENANT
        ]
        store.insert("activity", rows, "before-v2")
        monkeypatch.undo()

        assert store.migrate() == [2, 3, 4, 5]
        assert store.migrate() == []

        days = store.engagement(C1, since=date(2025, 9, 1), until=date(2025, 9, 17), limit=100)
        assert sum(d.events for d in days) == len(rows) == 19
        # Goals stored before v2 are in the goals rollup; their target date came with v2.
        assert [(g.goal_id, g.target_date) for g in store.learner_goals(TENANT, "n02")] == [
            ("g1", "")
        ]
    finally:
        store.close()


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReportingStore]:
    """The dataset, then (later on the roster topic): n02 leaves c1 (a tombstone), n04 moves to
    c2 (its enrollment's newer version, in another part: FINAL must not keep the older one) and
    n07 joins c1 without any evidence, on an enrollment naming no school (a class's school is
    the roster's class record). Both leavers keep their rows in c1: mastery, reasons, activity,
    errors, goals and reflections."""
    store = ChdbStore(tmp_path_factory.mktemp("moved") / "chdb", "trellis_moved")
    store.migrate()
    dataset.load(store)
    later = dataset.Builder()
    later.offsets[dataset.ROSTER_TOPIC] = 1_000
    later.tombstone(TENANT, "enrollment", "en-n02")
    for enrollment, learner, class_id in (("en-n04", "n04", "c2"), ("en-n07", "n07", "c1")):
        later.roster(
            TENANT,
            "enrollment",
            roster_pb2.Enrollment(
                sourced_id=enrollment, class_id=class_id, user_id=learner, role="learner"
            ),
        )
    # A part per row: the part of n04's move holds no c1 row, so a class_id skip index used with
    # FINAL inexactly would keep the older version (`use_skip_indexes_if_final_exact_mode` = 0:
    # n02 and n04 were still in c1 here; before ClickHouse 25.5 the setting did not exist).
    for table, rows in later.tables.items():
        for i, row in enumerate(rows):
            store.insert(table, [row], f"later/{table}/{i}")
    try:
        yield store
    finally:
        store.close()


# Every caller who reads c1's learners in school-n: an admin (tenant-wide, or of school-n), its
# teacher (with or without their schools).
SCHOOL_N_READERS: list[dict[str, list[str]]] = [
    {},
    {"schools": ["school-n"]},
    {"classes": ["c1"]},
    {"classes": ["c1"], "schools": ["school-n"]},
]


def test_a_moved_enrollment_leaves_its_first_class(moved: ReportingStore) -> None:
    assert moved.class_heatmap(TENANT, "c1", 100).learner_ids == ["n01", "n03", "n05", "n07"]
    assert moved.class_heatmap(TENANT, "c2", 100) == HeatmapRows([], ["n04"])


def test_needs_support_names_the_learners_enrolled_now(moved: ReportingStore) -> None:
    # n02 (low mastery and struggling in c1) left: not named; n07 joined, without activity.
    now = [
        ("n03", "low_engagement", "", 2.0, ""),
        ("n05", "low_engagement", "", 0.0, ""),
        ("n07", "low_engagement", "", 0.0, ""),
    ]
    assert support(moved) == now
    assert support(moved, limit=1, after="n03") == [now[1]]
    # A school: learners enrolled in its classes (not the roster's learner records of the
    # school, n06..n16; not the enrollment's own school, which n07's does not name).
    for scope in SCHOOL_N_READERS:
        assert support(moved, SCHOOL_N, **scope) == now, scope
    assert support(moved, SCHOOL_N, schools=["school-s"]) == []
    assert support(moved, C1, classes=["c2"]) == []


def test_ready_engagement_errors_and_goals_follow_the_roster(moved: ReportingStore) -> None:
    # n04 (3 of 3 mastered in c1) moved to c2: not ready in c1; n07 has no evidence anywhere.
    for target, scope in [(C1, {}), *[(SCHOOL_N, scope) for scope in SCHOOL_N_READERS]]:
        ready = moved.ready_to_accelerate(
            target, since=SINCE, until=AS_OF, mastered_share=0.8, min_skills=3, limit=10, **scope
        )
        assert [(r.learner_id, r.skills_started, r.skills_mastered) for r in ready] == [
            ("n01", 3, 3)
        ], (target, scope)

        days = moved.engagement(
            target, since=date(2025, 9, 1), until=date(2025, 9, 16), limit=100, **scope
        )
        assert [
            (d.learner_id, d.day, d.events, d.attempts, d.correct, d.attempt_seconds) for d in days
        ] == [
            ("n01", date(2025, 9, 11), 1, 0, 0, 0.0),
            ("n01", date(2025, 9, 14), 3, 3, 3, 180.0),
            ("n03", date(2025, 9, 1), 2, 2, 0, 80.0),
            ("n03", date(2025, 9, 14), 2, 1, 1, 45.0),
        ], (target, scope)

        errors = moved.error_breakdown(target, since=at(1, 0), until=AS_OF, limit=10, **scope)
        # n02's sign and carry errors on add are gone.
        assert [(e.skill_id, e.error_tag, e.attempts, e.learners) for e in errors] == [
            ("sub", "carry", 2, 1)
        ], (target, scope)

        goals = moved.class_goals(target, limit=10, **scope)
        # n02's goal g1 and reflection r1, n04's reflection r2: gone.
        assert [
            (r.learner_id, [(g.goal_id, p, level) for g, p, level in r.goals], r.reflections)
            for r in goals
        ] == [("n01", [("g2", 0.0, 0)], [])], (target, scope)
    # One learner's days in a class they left: none.
    assert (
        moved.engagement(
            C1, since=date(2025, 9, 1), until=date(2025, 9, 16), learner_id="n02", limit=9
        )
        == []
    )
