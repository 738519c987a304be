"""The reports over gRPC on the known district of `tests/contract/reporting/dataset.py`.

Learners are stored under the pseudonyms of SIS ids equal to the dataset's names (n01, ...), so
learner callers name themselves by SIS id and answers are mapped back to names for the checks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from pydantic import SecretStr

from tests.contract.reporting import dataset
from tests.contract.reporting.dataset import AS_OF, OTHER, TENANT
from trellis.common.grpc.server import ServiceBinding, create_server
from trellis.common.pb.reporting.v1 import reporting_pb2, reporting_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Principal, ReportingSettings, Settings
from trellis.reporting.adapters.grpc import SERVICE_NAME, ReportingServicer
from trellis.reporting.service import ReportingService
from trellis.reporting.store.chdb import ChdbStore

KEYS = {TENANT: {1: SecretStr("district-a-key")}, OTHER: {1: SecretStr("district-b-key")}}
PSEUDONYMS = Pseudonymizer(KEYS)
NAMES = {
    PSEUDONYMS.pseudonymize(TENANT, name): name
    for name in [learner for learner, *_ in dataset.learners()] + ["t1"]
}
TOKENS = {
    "teacher-c1": Principal(tenant_id=TENANT, role="teacher", classes=["c1"], schools=["school-n"]),
    "teacher-c2": Principal(tenant_id=TENANT, role="teacher", classes=["c2"], schools=["school-n"]),
    "admin": Principal(tenant_id=TENANT, role="district_admin"),
    "admin-se": Principal(
        tenant_id=TENANT, role="district_admin", schools=["school-s", "school-e"]
    ),
    "other-admin": Principal(tenant_id=OTHER, role="district_admin"),
    "learner-n02": Principal(tenant_id=TENANT, role="learner", learner_id="n02"),
    "learner-n01": Principal(tenant_id=TENANT, role="learner", learner_id="n01"),
}
Stub = reporting_pb2_grpc.ReportingServiceStub
R = reporting_pb2
C1 = R.ReportTarget(tenant_id=TENANT, class_id="c1")


def auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def ts(value: object) -> object:
    from google.protobuf.timestamp_pb2 import Timestamp

    out = Timestamp()
    out.FromDatetime(value)  # type: ignore[arg-type]
    return out


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbStore]:
    store = ChdbStore(tmp_path_factory.mktemp("reports") / "chdb", "trellis")
    store.migrate()
    dataset.load(store, lambda name: PSEUDONYMS.pseudonymize(TENANT, name))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
async def stub(store: ChdbStore) -> AsyncIterator[Stub]:
    settings = Settings()
    executor = ThreadPoolExecutor(max_workers=2)
    service = ReportingService(store, PSEUDONYMS, executor, ReportingSettings())
    server = create_server(
        settings.services.reporting.model_copy(update={"port": 0}),
        TOKENS,
        [
            ServiceBinding(
                SERVICE_NAME,
                reporting_pb2_grpc.add_ReportingServiceServicer_to_server,
                ReportingServicer(service),
            )
        ],
    )
    await server.start()
    await server.set_serving(True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield reporting_pb2_grpc.ReportingServiceStub(channel)
    finally:
        await server.stop()
        executor.shutdown()


async def test_needs_support_with_reasons_paged_by_learner(stub: Stub) -> None:
    pages, token = [], ""
    while True:
        answer = await stub.GetNeedsSupport(
            R.GetNeedsSupportRequest(target=C1, as_of=ts(AS_OF), page_size=1, page_token=token),
            metadata=auth("teacher-c1"),
            timeout=10,
        )
        pages.append(
            [
                (
                    n.learner_id,
                    [(r.kind, r.skill_id, round(r.value, 4), r.detail) for r in n.reasons],
                )
                for n in answer.learners
            ]
        )
        token = answer.next_page_token
        if not token:
            break
    assert [len(page) for page in pages] == [1, 1, 1]
    ids = [learner for page in pages for learner, _ in page]
    # By (pseudonymous) id, the only order a report uses.
    assert ids == sorted(ids)
    assert {NAMES[learner]: reasons for page in pages for learner, reasons in page} == {
        "n02": [
            (R.SUPPORT_REASON_KIND_LOW_MASTERY, "add", 0.2, ""),
            (R.SUPPORT_REASON_KIND_STRUGGLING, "add", 6.0, "repeated_error:sign"),
        ],
        "n03": [(R.SUPPORT_REASON_KIND_LOW_ENGAGEMENT, "", 2.0, "")],
        "n05": [(R.SUPPORT_REASON_KIND_LOW_ENGAGEMENT, "", 0.0, "")],
    }


async def test_reports_are_scoped_to_tenant_role_school_and_class(stub: Stub) -> None:
    request = R.GetNeedsSupportRequest(target=C1, as_of=ts(AS_OF))
    school_n = R.GetNeedsSupportRequest(
        target=R.ReportTarget(tenant_id=TENANT, school_id="school-n"), as_of=ts(AS_OF)
    )
    denied = grpc.StatusCode.PERMISSION_DENIED

    assert await code_of(stub.GetNeedsSupport(request, metadata=auth("teacher-c2"))) == denied
    assert await code_of(stub.GetNeedsSupport(request, metadata=auth("learner-n02"))) == denied
    assert await code_of(stub.GetNeedsSupport(request, metadata=auth("other-admin"))) == denied
    assert await code_of(stub.GetNeedsSupport(school_n, metadata=auth("admin-se"))) == denied
    # An admin of other schools may name the class, and sees none of its rows.
    scoped = await stub.GetNeedsSupport(request, metadata=auth("admin-se"))
    assert list(scoped.learners) == []
    # A teacher asking about their school sees their classes only: the same four learners.
    mine = await stub.GetNeedsSupport(school_n, metadata=auth("teacher-c1"))
    assert sorted(NAMES[n.learner_id] for n in mine.learners) == ["n02", "n03", "n05"]
    # The tenant's admin: the same rule, the learners enrolled in the school's classes (not the
    # roster's learner records of school-n, n01..n16).
    everyone = await stub.GetNeedsSupport(school_n, metadata=auth("admin"))
    assert sorted(NAMES[n.learner_id] for n in everyone.learners) == ["n02", "n03", "n05"]
    both = R.GetNeedsSupportRequest(
        target=R.ReportTarget(tenant_id=TENANT, class_id="c1", school_id="school-n")
    )
    assert (
        await code_of(stub.GetNeedsSupport(both, metadata=auth("admin")))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    bad_token = R.GetSkillGapsRequest(target=C1, page_token="nonsense")
    assert (
        await code_of(stub.GetSkillGaps(bad_token, metadata=auth("teacher-c1")))
        == grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_the_class_heatmap_lists_every_enrolled_learner(stub: Stub) -> None:
    def heatmap(token: str) -> Any:
        request = R.GetClassHeatmapRequest(tenant_id=TENANT, class_id="c1", page_size=100)
        return stub.GetClassHeatmap(request, metadata=auth(token))

    mine = await heatmap("teacher-c1")
    # n05 is enrolled without evidence (not started); n06 practised in c1 but is not enrolled;
    # t1 teaches it.
    assert sorted(NAMES[learner] for learner in mine.learner_ids) == [
        "n01",
        "n02",
        "n03",
        "n04",
        "n05",
    ]
    assert list(mine.learner_ids) == sorted(mine.learner_ids)  # by (pseudonymous) id
    assert sorted({NAMES[c.learner_id] for c in mine.cells}) == ["n01", "n02", "n03", "n04"]
    assert len(mine.cells) == 11
    # An admin of other schools sees neither cells nor learners of c1.
    scoped = await heatmap("admin-se")
    assert (list(scoped.learner_ids), list(scoped.cells)) == ([], [])


async def test_ready_gaps_engagement_errors_growth(stub: Stub) -> None:
    meta = auth("teacher-c1")
    ready = await stub.GetReadyToAccelerate(
        R.GetReadyToAccelerateRequest(target=C1, as_of=ts(AS_OF)), metadata=meta
    )
    gaps = await stub.GetSkillGaps(R.GetSkillGapsRequest(target=C1, page_size=2), metadata=meta)
    engagement = await stub.GetEngagement(
        R.GetEngagementRequest(
            target=C1,
            since=ts(dataset.at(14, 0)),
            until=ts(dataset.at(15, 0)),
            learner_id="n03",
        ),
        metadata=meta,
    )
    errors = await stub.GetErrorBreakdown(
        R.GetErrorBreakdownRequest(target=C1, since=ts(dataset.SINCE), until=ts(AS_OF)),
        metadata=meta,
    )
    growth = await stub.GetGrowth(
        R.GetGrowthRequest(target=C1, since=ts(dataset.at(8, 0)), until=ts(AS_OF)), metadata=meta
    )

    assert sorted(
        (NAMES[r.learner_id], r.skills_started, r.skills_mastered) for r in ready.learners
    ) == [("n01", 3, 3), ("n04", 3, 3)]
    assert [r.learner_id for r in ready.learners] == sorted(r.learner_id for r in ready.learners)
    assert [(g.skill_id, g.learners, g.below, g.mastered) for g in gaps.skills] == [
        ("add", 4, 1, 3),
        ("mul", 3, 0, 2),
    ]
    assert gaps.next_page_token
    assert [
        (d.day, d.events, d.attempts, d.attempt_seconds, d.resources, d.resource_seconds)
        for d in engagement.days
    ] == [("2025-09-14", 2, 1, 45.0, 1, 300.0)]
    assert [(e.skill_id, e.error_tag, e.attempts, e.learners) for e in errors.errors] == [
        ("add", "carry", 1, 1),
        ("add", "sign", 2, 1),
    ]
    rows = {(NAMES[g.learner_id], g.skill_id): (g.p_start, g.p_end, g.updates) for g in growth.rows}
    assert len(rows) == 10
    assert rows[("n02", "add")] == (0.15, 0.2, 1)


async def test_a_learner_sees_their_own_view_and_timeline_only(stub: Stub) -> None:
    own = await stub.GetLearnerView(
        R.GetLearnerViewRequest(tenant_id=TENANT, learner_id="n02"), metadata=auth("learner-n02")
    )
    n01 = await stub.GetLearnerView(
        R.GetLearnerViewRequest(tenant_id=TENANT, learner_id="n01"), metadata=auth("learner-n01")
    )
    timeline = await stub.GetLearnerTimeline(
        R.GetLearnerTimelineRequest(
            tenant_id=TENANT, learner_id="n02", since=ts(dataset.at(1, 0)), until=ts(AS_OF)
        ),
        metadata=auth("learner-n02"),
    )

    assert [(s.skill_id, round(s.p_mastered, 4)) for s in own.skills] == [
        ("add", 0.2),
        ("sub", 0.3),
    ]
    assert list(own.strengths) == []
    assert [
        (g.goal_id, g.skill_id, g.target_date, round(g.p_mastered, 4), g.reached) for g in own.goals
    ] == [("g1", "add", "2025-10-01", 0.2, False)]
    assert list(n01.strengths) == ["add", "mul", "sub"]
    assert [(g.goal_id, g.p_mastered, g.reached) for g in n01.goals] == [("g2", 0.0, False)]
    assert [(e.kind, e.detail, e.HasField("score")) for e in timeline.entries] == [
        ("goal_set", "", False),
        ("item_attempted", "sign", True),
        ("item_attempted", "sign", True),
        ("item_attempted", "carry", True),
        ("item_attempted", "", True),
        ("struggling_detected", "repeated_error:sign", True),
    ]
    other = stub.GetLearnerView(
        R.GetLearnerViewRequest(tenant_id=TENANT, learner_id="n01"), metadata=auth("learner-n02")
    )
    assert await code_of(other) == grpc.StatusCode.PERMISSION_DENIED


async def test_a_learner_out_of_scope_is_refused(stub: Stub) -> None:
    def view(token: str) -> Any:
        return stub.GetLearnerView(
            R.GetLearnerViewRequest(tenant_id=TENANT, learner_id="n02"), metadata=auth(token)
        )

    def timeline(token: str) -> Any:
        return stub.GetLearnerTimeline(
            R.GetLearnerTimelineRequest(tenant_id=TENANT, learner_id="n02"), metadata=auth(token)
        )

    def engagement(token: str) -> Any:
        target = R.ReportTarget(tenant_id=TENANT, school_id="school-n")
        return stub.GetEngagement(
            R.GetEngagementRequest(target=target, learner_id="n02"), metadata=auth(token)
        )

    # n02 is enrolled in c1 (school-n) and set goal g1.
    for token in ("teacher-c1", "admin"):
        assert [g.goal_id for g in (await view(token)).goals] == ["g1"]
        assert (await timeline(token)).learner_id
    # teacher-c2 teaches in school-n too, but not n02's class; admin-se has other schools.
    for token in ("teacher-c2", "admin-se"):
        for call in (view, timeline):
            assert await code_of(call(token)) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(engagement("teacher-c2")) == grpc.StatusCode.PERMISSION_DENIED


async def test_store_stats_are_for_admins_of_the_whole_tenant(stub: Stub) -> None:
    request = R.GetStoreStatsRequest(tenant_id=TENANT)
    assert (await stub.GetStoreStats(request, metadata=auth("admin"))).tables
    for token in ("admin-se", "teacher-c1", "learner-n02"):
        assert await code_of(stub.GetStoreStats(request, metadata=auth(token))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )


def cells(rollup: reporting_pb2.DistrictRollup) -> list[tuple[str, int, int]]:
    return [(c.key, c.learners, c.suppression) for c in rollup.cells]


SHOWN = R.CELL_SUPPRESSION_SHOWN
PRIMARY = R.CELL_SUPPRESSION_PRIMARY
COMPLEMENTARY = R.CELL_SUPPRESSION_COMPLEMENTARY


async def test_district_rollups_withhold_small_cells_and_their_complements(stub: Stub) -> None:
    async def rollup(dimension: int, token: str = "admin", skill: str = "") -> R.DistrictRollup:
        return await stub.GetDistrictRollup(
            R.GetDistrictRollupRequest(tenant_id=TENANT, dimension=dimension, skill_id=skill),
            metadata=auth(token),
            timeout=10,
        )

    schools = await rollup(R.ROLLUP_DIMENSION_SCHOOL)
    grades = await rollup(R.ROLLUP_DIMENSION_GRADE)
    subgroups = await rollup(R.ROLLUP_DIMENSION_SUBGROUP)
    mul = await rollup(R.ROLLUP_DIMENSION_SCHOOL, skill="mul")
    scoped = await rollup(R.ROLLUP_DIMENSION_GRADE, token="admin-se")

    assert cells(schools) == [
        ("school-e", 0, COMPLEMENTARY),
        ("school-n", 16, SHOWN),
        ("school-s", 0, PRIMARY),
    ]
    assert (schools.total.learners, schools.min_cell_size) == (36, 10)
    # Withheld cells carry no figures.
    assert (schools.cells[0].mean_mastery, schools.cells[2].mastered_share) == (0.0, 0.0)
    assert schools.cells[1].mastered_share == pytest.approx((1 + 0 + 2 / 3 + 1) / 16)
    assert cells(grades) == [("3", 0, PRIMARY), ("4", 21, SHOWN), ("5", 0, COMPLEMENTARY)]
    assert cells(subgroups) == [("ell", 12, SHOWN), ("frl", 0, COMPLEMENTARY), ("iep", 0, PRIMARY)]
    # Another skill: other figures, the same cells withheld.
    assert cells(mul) == cells(schools)
    assert mul.cells[1].mastered_share == pytest.approx(2 / 16)
    # An admin of two schools: 20 learners, each grade under 10.
    assert cells(scoped) == [("3", 0, PRIMARY), ("4", 0, PRIMARY), ("5", 0, PRIMARY)]
    assert scoped.total.learners == 20
    # Nothing from the other tenant: its admin sees its one learner, withheld.
    other = await stub.GetDistrictRollup(
        R.GetDistrictRollupRequest(tenant_id=OTHER, dimension=R.ROLLUP_DIMENSION_SCHOOL),
        metadata=auth("other-admin"),
    )
    assert (other.total.learners, other.total.suppression) == (0, PRIMARY)
    assert cells(other) == [("x", 0, PRIMARY)]
    teacher = stub.GetDistrictRollup(
        R.GetDistrictRollupRequest(tenant_id=TENANT, dimension=R.ROLLUP_DIMENSION_SCHOOL),
        metadata=auth("teacher-c1"),
    )
    assert await code_of(teacher) == grpc.StatusCode.PERMISSION_DENIED
    unspecified = stub.GetDistrictRollup(
        R.GetDistrictRollupRequest(tenant_id=TENANT), metadata=auth("admin")
    )
    assert await code_of(unspecified) == grpc.StatusCode.INVALID_ARGUMENT


async def test_goals_and_reflections_of_a_class(stub: Stub) -> None:
    answer = await stub.GetClassGoals(
        R.GetClassGoalsRequest(target=C1), metadata=auth("teacher-c1"), timeout=10
    )
    by_name = {NAMES[n.learner_id]: n for n in answer.learners}

    assert sorted(by_name) == ["n01", "n02", "n04"]
    [goal] = by_name["n02"].goals
    assert (goal.goal_id, goal.target_date, round(goal.p_mastered, 4), goal.reached) == (
        "g1",
        "2025-10-01",
        0.2,
        False,
    )
    [r1] = by_name["n02"].reflections
    [r2] = by_name["n04"].reflections
    assert (r1.reflection_id, r1.HasField("confidence"), round(r1.confidence, 4)) == (
        "r1",
        True,
        0.4,
    )
    assert (r2.reflection_id, r2.HasField("confidence")) == ("r2", False)
    denied = stub.GetClassGoals(R.GetClassGoalsRequest(target=C1), metadata=auth("learner-n02"))
    assert await code_of(denied) == grpc.StatusCode.PERMISSION_DENIED


async def test_engagement_defaults_to_the_recent_days_and_refuses_an_empty_period(
    stub: Stub,
) -> None:
    meta = auth("teacher-c1")
    # The dataset is in 2025: the default window (the last 7 days) holds none of it.
    recent = await stub.GetEngagement(R.GetEngagementRequest(target=C1), metadata=meta)
    assert list(recent.days) == []
    empty = stub.GetEngagement(
        R.GetEngagementRequest(
            target=C1, since=ts(dataset.at(14, 9)), until=ts(dataset.at(14, 18))
        ),
        metadata=meta,
    )
    assert await code_of(empty) == grpc.StatusCode.INVALID_ARGUMENT
    late = stub.GetEngagement(R.GetEngagementRequest(target=C1), metadata=meta, timeout=0.000_001)
    assert await code_of(late) == grpc.StatusCode.DEADLINE_EXCEEDED
