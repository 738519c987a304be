"""Reporting over gRPC on a chDB store: pseudonymized lookups, paging, tenant and role scopes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.conftest import TEST_TENANT
from trellis.common.grpc.server import ServiceBinding, create_server
from trellis.common.pb.events.v1 import envelope_pb2, mastery_pb2, roster_pb2
from trellis.common.pb.reporting.v1 import reporting_pb2, reporting_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Principal, Settings
from trellis.reporting.adapters.grpc import SERVICE_NAME, ReportingServicer
from trellis.reporting.rows import Position, mastery_rows, roster_rows
from trellis.reporting.service import ReportingService
from trellis.reporting.store.chdb import ChdbStore

T0 = datetime(2025, 9, 1, 8, 0, tzinfo=UTC)
TOKENS = {
    "admin": Principal(tenant_id=TEST_TENANT, role="district_admin"),
    "admin-school-1": Principal(tenant_id=TEST_TENANT, role="district_admin", schools=["school-1"]),
    "admin-school-2": Principal(tenant_id=TEST_TENANT, role="district_admin", schools=["school-2"]),
    "teacher": Principal(tenant_id=TEST_TENANT, role="teacher", classes=["class-a"]),
    "learner": Principal(tenant_id=TEST_TENANT, role="learner", learner_id="sis-1"),
    "tool": Principal(tenant_id=TEST_TENANT, role="service"),
    "platform": Principal(tenant_id="platform", role="platform_admin"),
}
Stub = reporting_pb2_grpc.ReportingServiceStub


def auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def store(tmp_path: Path, settings: Settings) -> Iterator[ChdbStore]:
    store = ChdbStore(tmp_path / "chdb", "trellis")
    store.migrate()
    pseudonym = Pseudonymizer(settings.pseudonym.all_keys())
    pairs = []
    # learners sis-1..sis-4; sis-1 and sis-2 in class-a, sis-3 and sis-4 in class-b (skills s1, s2)
    offset = 0
    for n in range(1, 5):
        for skill in ("s1", "s2"):
            for p in (0.3, 0.6):
                ts = Timestamp()
                ts.FromDatetime(T0 + timedelta(minutes=offset))
                envelope = envelope_pb2.Envelope(
                    event_id=f"mu-{offset}",
                    tenant_id=TEST_TENANT,
                    school_id="school-1",
                    class_id="class-a" if n <= 2 else "class-b",
                    learner_id=pseudonym.pseudonymize(TEST_TENANT, f"sis-{n}"),
                    occurred_at=ts,
                    mastery_updated=mastery_pb2.MasteryUpdated(
                        skill_id=skill,
                        p_after=p + n / 100,
                        level=mastery_pb2.MASTERY_LEVEL_PRACTICING,
                        attempts=offset,
                    ),
                )
                pairs += mastery_rows(envelope, Position("mastery", 0, offset))
                offset += 1
    # The roster: class-a and class-b in school-1; sis-1, sis-2 enrolled in class-a, sis-3 in
    # class-b; sis-4 has evidence in class-b but no enrollment (reachable by unscoped callers).
    records = [
        roster_pb2.RosterRecord(
            tenant_id=TEST_TENANT,
            school_class=roster_pb2.SchoolClass(sourced_id=class_id, school_id="school-1"),
        )
        for class_id in ("class-a", "class-b")
    ] + [
        roster_pb2.RosterRecord(
            tenant_id=TEST_TENANT,
            enrollment=roster_pb2.Enrollment(
                sourced_id=f"en-{n}",
                class_id=class_id,
                user_id=pseudonym.pseudonymize(TEST_TENANT, f"sis-{n}"),
                role="learner",
            ),
        )
        for n, class_id in ((1, "class-a"), (2, "class-a"), (3, "class-b"))
    ]
    for n, record in enumerate(records):
        kind = record.WhichOneof("entity")
        key = f"{TEST_TENANT}/{kind}/{getattr(record, kind).sourced_id}".encode()
        pairs += roster_rows(key, record, Position("roster", 0, n))
    for table in ("mastery_history", "mastery_latest", "roster_classes", "roster_enrollments"):
        store.insert(table, [row for t, row in pairs if t == table], f"seed/{table}")
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
async def stub(settings: Settings, store: ChdbStore) -> AsyncIterator[Stub]:
    executor = ThreadPoolExecutor(max_workers=2)
    service = ReportingService(store, Pseudonymizer(settings.pseudonym.all_keys()), executor)
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


async def progress(stub: Stub, token: str, sis_id: str, tenant: str = TEST_TENANT) -> list[float]:
    answer = await stub.GetLearnerProgress(
        reporting_pb2.GetLearnerProgressRequest(tenant_id=tenant, learner_id=sis_id),
        metadata=auth(token),
    )
    return [round(s.p_mastered, 4) for s in answer.skills]


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    return error.value.code()


async def test_learner_progress_is_looked_up_by_sis_id(stub: Stub, settings: Settings) -> None:
    answer = await stub.GetLearnerProgress(
        reporting_pb2.GetLearnerProgressRequest(tenant_id=TEST_TENANT, learner_id="sis-3"),
        metadata=auth("admin"),
    )

    pseudonym = Pseudonymizer(settings.pseudonym.all_keys()).pseudonymize(TEST_TENANT, "sis-3")
    assert answer.learner_id == pseudonym != "sis-3"
    assert [(s.skill_id, round(s.p_mastered, 4)) for s in answer.skills] == [
        ("s1", 0.63),
        ("s2", 0.63),
    ]
    assert answer.skills[0].level == mastery_pb2.MASTERY_LEVEL_PRACTICING
    assert answer.skills[0].updated_at.ToDatetime(tzinfo=UTC) > T0


async def test_learner_progress_follows_the_callers_scope(stub: Stub) -> None:
    assert await progress(stub, "learner", "sis-1") == [0.61, 0.61]
    assert await code_of(progress(stub, "learner", "sis-2")) == grpc.StatusCode.PERMISSION_DENIED
    assert await progress(stub, "teacher", "sis-2") == [0.62, 0.62]
    assert await progress(stub, "admin-school-1", "sis-3") == [0.63, 0.63]
    # Outside the caller's classes or schools: refused, not answered empty (DESIGN.md §3a).
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(progress(stub, "teacher", "sis-3")) == denied
    assert await code_of(progress(stub, "admin-school-2", "sis-3")) == denied
    # sis-4 has rows but no enrollment: only unscoped callers reach them.
    assert await code_of(progress(stub, "admin-school-1", "sis-4")) == denied
    assert await code_of(progress(stub, "teacher", "sis-404")) == denied
    assert await progress(stub, "admin", "sis-4") == [0.64, 0.64]
    assert await progress(stub, "platform", "sis-4") == [0.64, 0.64]
    assert await code_of(progress(stub, "tool", "sis-1")) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(progress(stub, "admin", "sis-1", "other")) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert await code_of(progress(stub, "admin", "")) == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(progress(stub, "platform", "x", "unknown-district")) == (
        grpc.StatusCode.NOT_FOUND
    )


async def test_class_heatmap_pages_through_the_latest_cells(stub: Stub, settings: Settings) -> None:
    cells, token, pages, learners = [], "", 0, []
    while True:
        page = await stub.GetClassHeatmap(
            reporting_pb2.GetClassHeatmapRequest(
                tenant_id=TEST_TENANT, class_id="class-b", page_size=1, page_token=token
            ),
            metadata=auth("admin"),
        )
        pages += 1
        cells += [(c.learner_id, c.skill_id, round(c.p_mastered, 4)) for c in page.cells]
        learners.append(list(page.learner_ids))
        token = page.next_page_token
        if not token:
            break

    # class-b enrols sis-3 only: sis-4's evidence there is not shown (not enrolled).
    sis_3 = Pseudonymizer(settings.pseudonym.all_keys()).pseudonymize(TEST_TENANT, "sis-3")
    assert pages == 2
    assert cells == [(sis_3, "s1", 0.63), (sis_3, "s2", 0.63)]  # latest values only
    assert learners == [[sis_3], []]  # the class's learners come with the first page


async def test_class_heatmap_checks_role_class_and_page_token(stub: Stub) -> None:
    def heatmap(token: str, class_id: str, page_token: str = "") -> object:
        return stub.GetClassHeatmap(
            reporting_pb2.GetClassHeatmapRequest(
                tenant_id=TEST_TENANT, class_id=class_id, page_token=page_token
            ),
            metadata=auth(token),
        )

    mine = await heatmap("teacher", "class-a")  # type: ignore[misc]
    assert len(mine.cells) == 4
    assert await code_of(heatmap("teacher", "class-b")) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(heatmap("learner", "class-a")) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(heatmap("admin", "")) == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(heatmap("admin", "class-a", "garbage")) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    other = await stub.GetClassHeatmap(
        reporting_pb2.GetClassHeatmapRequest(
            tenant_id=TEST_TENANT, class_id="class-b", page_size=1
        ),
        metadata=auth("admin"),
    )
    assert await code_of(heatmap("admin", "class-a", other.next_page_token)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_store_stats_are_for_admins_of_the_tenant(stub: Stub) -> None:
    stats = await stub.GetStoreStats(
        reporting_pb2.GetStoreStatsRequest(tenant_id=TEST_TENANT), metadata=auth("admin")
    )

    rows = {t.table: t.rows for t in stats.tables}
    assert (rows["activity"], rows["mastery_history"], rows["mastery_latest"]) == (0, 16, 8)
    assert rows["roster_learners"] == rows["engagement_daily"] == 0
    teacher = stub.GetStoreStats(
        reporting_pb2.GetStoreStatsRequest(tenant_id=TEST_TENANT), metadata=auth("teacher")
    )
    assert await code_of(teacher) == grpc.StatusCode.PERMISSION_DENIED
    unauthenticated = stub.GetStoreStats(reporting_pb2.GetStoreStatsRequest(tenant_id=TEST_TENANT))
    assert await code_of(unauthenticated) == grpc.StatusCode.UNAUTHENTICATED
