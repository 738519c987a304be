"""Reporting use cases over an in-memory fake store: pseudonymization, scopes, page tokens."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from trellis.common.pseudonym import Pseudonymizer, UnknownTenantKey
from trellis.common.settings import Principal, ReportingSettings
from trellis.reporting.adapters.grpc import scope_of
from trellis.reporting.service import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    BadPageToken,
    LearnerOutOfScope,
    ReportingService,
    Scope,
    decode_cursor,
    decode_page_token,
    encode_cursor,
    encode_page_token,
    recent_window,
)
from trellis.reporting.store.base import (
    GoalRow,
    HeatmapCell,
    HeatmapRows,
    PartitionKey,
    ReportingStore,
    RollupRows,
    SkillProgress,
    StoreStatus,
    SupportReason,
    Target,
    TimelineEntry,
)

KEYS = {"d1": {1: SecretStr("k1")}}


class FakeStore(ReportingStore):
    def __init__(self, cells: int = 0, enrolled: bool = True) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.cells = [HeatmapCell(f"l{i:04d}", "s", 0.5, 2) for i in range(cells)]
        self.enrolled = enrolled  # what the roster says of every learner

    def status(self) -> StoreStatus:
        return StoreStatus.OK

    def migrate(self) -> list[int]:
        return []

    def positions(self, tables: Sequence[str]) -> dict[str, dict[PartitionKey, int]]:
        return {table: {} for table in tables}

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]], token: str) -> None:
        pass

    def erased_learners(self) -> set[tuple[str, str]]:
        return set()

    def erase_learners(self, tenant_id: str, learner_ids: Sequence[str]) -> None:
        pass

    def learner_progress(
        self, tenant_id: str, learner_id: str, **scope: Any
    ) -> list[SkillProgress]:
        self.calls.append(("learner_progress", (tenant_id, learner_id), scope))
        return [SkillProgress("s", 0.9, 4, 3, datetime(2025, 1, 1, tzinfo=UTC))]

    def class_heatmap(
        self,
        tenant_id: str,
        class_id: str,
        limit: int,
        after: tuple[str, str] | None = None,
        **scope: Any,
    ) -> HeatmapRows:
        self.calls.append(("class_heatmap", (tenant_id, class_id, limit, after), scope))
        if after is None:
            return HeatmapRows(self.cells[:limit], sorted({c.learner_id for c in self.cells}))
        start = next(i + 1 for i, c in enumerate(self.cells) if c.learner_id == after[0])
        return HeatmapRows(self.cells[start : start + limit], [])

    def row_counts(self, tenant_id: str) -> dict[str, int]:
        return {"activity": 1}

    def learner_enrolled(self, tenant_id: str, learner_id: str, **kw: Any) -> bool:
        self.calls.append(("learner_enrolled", (tenant_id, learner_id), kw))
        return self.enrolled

    def learner_goals(self, tenant_id: str, learner_id: str, **kw: Any) -> list[GoalRow]:
        self.calls.append(("learner_goals", (tenant_id, learner_id), kw))
        return []

    def timeline(self, tenant_id: str, learner_id: str, **kw: Any) -> list[TimelineEntry]:
        self.calls.append(("timeline", (tenant_id, learner_id), kw))
        return []

    def needs_support(self, target: Target, **kw: Any) -> list[SupportReason]:
        self.calls.append(("needs_support", (target,), kw))
        learners = [f"l{i}" for i in range(5) if f"l{i}" > kw["after"]][: kw["limit"]]
        out = []
        for learner in learners:
            out.append(SupportReason(learner, "low_mastery", "s1", 0.1, ""))
            out.append(SupportReason(learner, "struggling", "s1", 7, "many_attempts"))
        return out

    def rollup(self, tenant_id: str, dimension: str, **kw: Any) -> RollupRows:
        self.calls.append(("rollup", (tenant_id, dimension), kw))
        return RollupRows(groups=[("a", 4, 0.5, 0.25), ("b", 30, 0.5, 0.5)], total=(34, 0.5, 0.4))

    def close(self) -> None:
        pass


@pytest.fixture
def executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1)


async def test_learner_progress_pseudonymizes_before_the_store_sees_the_id(
    executor: ThreadPoolExecutor,
) -> None:
    store = FakeStore()
    service = ReportingService(store, Pseudonymizer(KEYS), executor)

    result = await service.learner_progress("d1", "sis-42", Scope(classes=["c1"]))

    expected = Pseudonymizer(KEYS).pseudonymize("d1", "sis-42")
    assert result.learner_id == expected
    assert store.calls == [
        (
            "learner_enrolled",
            ("d1", expected),
            {"classes": ["c1"], "schools": None, "timeout_s": 10.0},
        ),
        ("learner_progress", ("d1", expected), {"classes": ["c1"], "schools": None}),
    ]
    assert "sis-42" not in repr(store.calls)


async def test_unknown_tenants_have_no_pseudonyms(executor: ThreadPoolExecutor) -> None:
    service = ReportingService(FakeStore(), Pseudonymizer(KEYS), executor)

    with pytest.raises(UnknownTenantKey):
        await service.learner_progress("d2", "sis-1", Scope())


async def test_heatmap_pages_carry_a_token_until_the_last(executor: ThreadPoolExecutor) -> None:
    service = ReportingService(FakeStore(cells=5), Pseudonymizer(KEYS), executor)

    first = await service.class_heatmap("d1", "c1", 2, "", Scope())
    second = await service.class_heatmap("d1", "c1", 2, first.next_page_token, Scope())
    third = await service.class_heatmap("d1", "c1", 2, second.next_page_token, Scope())

    assert [c.learner_id for c in first.cells + second.cells + third.cells] == [
        f"l{i:04d}" for i in range(5)
    ]
    assert first.next_page_token and second.next_page_token
    assert third.next_page_token == ""
    # The class's learners come with the first page only.
    assert first.learner_ids == [f"l{i:04d}" for i in range(5)]
    assert second.learner_ids == third.learner_ids == []


@pytest.mark.parametrize(
    ("asked", "limit"),
    [(0, DEFAULT_PAGE_SIZE), (7, 7), (MAX_PAGE_SIZE * 10, MAX_PAGE_SIZE)],
)
async def test_page_size_defaults_and_is_capped(
    executor: ThreadPoolExecutor, asked: int, limit: int
) -> None:
    store = FakeStore()
    service = ReportingService(store, Pseudonymizer(KEYS), executor)

    await service.class_heatmap("d1", "c1", asked, "", Scope(schools=["s1"]))

    assert store.calls == [("class_heatmap", ("d1", "c1", limit + 1, None), {"schools": ["s1"]})]


def test_page_tokens_round_trip_and_are_bound_to_their_class() -> None:
    token = encode_page_token("c1", ("learner/with=odd chars", "skill.é"))

    assert decode_page_token("c1", token) == ("learner/with=odd chars", "skill.é")
    assert decode_page_token("c1", "") is None
    with pytest.raises(BadPageToken, match="another class"):
        decode_page_token("c2", token)


@pytest.mark.parametrize("token", ["garbage!", "e30", "W10", "eyJjIjoxLCJsIjoyLCJzIjozfQ"])
def test_foreign_page_tokens_are_refused(token: str) -> None:
    with pytest.raises(BadPageToken):
        decode_page_token("c1", token)


async def test_a_scoped_caller_reaches_only_learners_the_roster_places_in_its_scope(
    executor: ThreadPoolExecutor,
) -> None:
    outside = FakeStore(enrolled=False)
    service = ReportingService(outside, Pseudonymizer(KEYS), executor)
    since, until = datetime(2025, 9, 1, tzinfo=UTC), datetime(2025, 9, 15, tzinfo=UTC)
    teacher = Scope(classes=["c1"], schools=["s1"])
    school_admin = Scope(schools=["s1"])
    target = Target("d1", school_id="s1")

    with pytest.raises(LearnerOutOfScope):
        await service.learner_progress("d1", "sis-1", teacher)
    with pytest.raises(LearnerOutOfScope):
        await service.learner_view("d1", "sis-1", school_admin)
    with pytest.raises(LearnerOutOfScope):
        await service.timeline("d1", "sis-1", since, until, 10, "", teacher)
    with pytest.raises(LearnerOutOfScope):
        await service.engagement(target, since.date(), until.date(), "sis-1", 10, "", teacher)

    # Only the roster was asked: a teacher by their classes alone, an admin by its schools.
    assert {name for name, _, _ in outside.calls} == {"learner_enrolled"}
    scopes = [(kw["classes"], kw["schools"]) for _, _, kw in outside.calls]
    assert scopes == [(["c1"], None), (None, ["s1"]), (["c1"], None), (["c1"], None)]

    # Unscoped callers (whole-tenant and platform admins, a learner's own id) skip the roster.
    unscoped = FakeStore(enrolled=False)
    service = ReportingService(unscoped, Pseudonymizer(KEYS), executor)
    await service.learner_view("d1", "sis-1", Scope())
    await service.timeline("d1", "sis-1", since, until, 10, "", Scope())
    assert [name for name, _, _ in unscoped.calls] == [
        "learner_progress",
        "learner_goals",
        "timeline",
    ]


def test_scopes_follow_the_role() -> None:
    teacher = Principal(tenant_id="d1", role="teacher", classes=["c1"])
    school_admin = Principal(tenant_id="d1", role="district_admin", schools=["s1"])

    assert scope_of(teacher) == Scope(classes=["c1"], schools=None)
    assert scope_of(school_admin) == Scope(schools=["s1"])
    assert scope_of(Principal(tenant_id="d1", role="district_admin")) == Scope()
    assert scope_of(Principal(tenant_id="d1", role="platform_admin")) == Scope()
    assert scope_of(Principal(tenant_id="d1", role="learner", learner_id="x")) == Scope()


async def test_needs_support_groups_reasons_and_pages_whole_learners(
    executor: ThreadPoolExecutor,
) -> None:
    store = FakeStore()
    service = ReportingService(store, Pseudonymizer(KEYS), executor)
    target = Target("d1", class_id="c1")
    as_of = datetime(2025, 9, 15, 12, tzinfo=UTC)

    first = await service.needs_support(target, as_of, 2, "", Scope(classes=["c1"]), 0.25)
    second = await service.needs_support(target, as_of, 2, first.next_page_token, Scope(), None)

    assert [(n.learner_id, [r.reason for r in n.reasons]) for n in first.items] == [
        ("l0", ["low_mastery", "struggling"]),
        ("l1", ["low_mastery", "struggling"]),
    ]
    assert [n.learner_id for n in second.items] == ["l2", "l3"]
    _, _, kw = store.calls[0]
    # The window is the 7 days up to as_of; a 0.25 s deadline caps the 10 s query limit.
    assert (kw["since"], kw["until"]) == (datetime(2025, 9, 9, tzinfo=UTC), as_of)
    assert (kw["limit"], kw["after"], kw["timeout_s"], kw["classes"]) == (3, "", 0.25, ["c1"])
    assert store.calls[1][2]["timeout_s"] == 10.0
    with pytest.raises(BadPageToken, match="another request"):
        await service.needs_support(
            Target("d1", class_id="c2"), as_of, 2, first.next_page_token, Scope()
        )


async def test_rollups_apply_the_configured_cell_size(executor: ThreadPoolExecutor) -> None:
    default = ReportingService(FakeStore(), Pseudonymizer(KEYS), executor)
    small = ReportingService(
        FakeStore(), Pseudonymizer(KEYS), executor, ReportingSettings(min_cell_size=3)
    )

    withheld = await default.district_rollup("d1", "school", "", Scope(schools=["s1"]))
    shown = await small.district_rollup("d1", "school", "", Scope())

    # 4 < 10: a alone withheld would be 34 - 30: b goes too.
    assert [(c.key, c.learners, c.suppression.value) for c in withheld.cells] == [
        ("a", 0, "primary"),
        ("b", 0, "complementary"),
    ]
    assert [(c.key, c.learners) for c in shown.cells] == [("a", 4), ("b", 30)]
    assert (withheld.min_cell_size, shown.min_cell_size) == (10, 3)
    with pytest.raises(ValueError, match="dimension"):
        await default.district_rollup("d1", "gender", "", Scope())


def test_recent_window_is_whole_days_up_to_as_of() -> None:
    as_of = datetime(2025, 9, 15, 12, 30, tzinfo=UTC)
    assert recent_window(as_of, 1) == (datetime(2025, 9, 15, tzinfo=UTC), as_of)
    assert recent_window(as_of, 7)[0] == datetime(2025, 9, 9, tzinfo=UTC)


def test_report_cursors_are_bound_to_report_and_request() -> None:
    token = encode_cursor("growth", "d1|c1|", ["l1", "s1"])

    assert decode_cursor("growth", "d1|c1|", token, 2) == ["l1", "s1"]
    assert decode_cursor("growth", "d1|c1|", "", 2) is None
    with pytest.raises(BadPageToken):
        decode_cursor("errors", "d1|c1|", token, 2)
    with pytest.raises(BadPageToken, match="another request"):
        decode_cursor("growth", "d1|c2|", token, 2)
    with pytest.raises(BadPageToken):
        decode_cursor("growth", "d1|c1|", token, 1)
