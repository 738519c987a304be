"""Ingest on the real broker: authorization, roster- and catalog-backed checks, privacy of the
roster topic, and a dedup window that survives a restart."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.conftest import TEST_TENANT
from tests.integration.ingest.test_grpc_ingest import (
    AUTH,
    OTHER_TENANT_TOKEN,
    SCHOOL_TOKEN,
    TEACHER_TOKEN,
    attempt,
    running_ingest,
    topic_values,
)
from trellis.common.kafka import create_consumer
from trellis.common.logging import GRPC_AIO_LOGGER
from trellis.common.pb.events.v1 import catalog_pb2, envelope_pb2, roster_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.settings import Settings

ACCEPTED = ingest_pb2.ITEM_STATUS_ACCEPTED
DUPLICATE = ingest_pb2.ITEM_STATUS_DUPLICATE
REJECTED = ingest_pb2.ITEM_STATUS_REJECTED


@pytest.fixture
async def ingest(settings: Settings) -> AsyncIterator[ingest_pb2_grpc.IngestServiceStub]:
    async with running_ingest(settings) as stub:
        yield stub


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def at(event_id: str, school: str = "sch1", klass: str = "c1") -> envelope_pb2.Envelope:
    event = attempt(event_id)
    event.school_id, event.class_id = school, klass
    return event


async def record(
    stub: ingest_pb2_grpc.IngestServiceStub,
    events: list[envelope_pb2.Envelope],
    metadata: tuple[tuple[str, str], ...] = AUTH,
    tenant: str = TEST_TENANT,
) -> list[ingest_pb2.ItemResult]:
    request = ingest_pb2.RecordEventsRequest(tenant_id=tenant, events=events)
    return list((await stub.RecordEvents(request, metadata=metadata)).results)


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    return error.value.code()


async def test_auth_missing_wrong_other_tenant_other_school_other_class(
    ingest: ingest_pb2_grpc.IngestServiceStub,
) -> None:
    one = [at("a1")]
    assert await code_of(record(ingest, one, metadata=())) == grpc.StatusCode.UNAUTHENTICATED
    assert await code_of(record(ingest, one, bearer("wrong"))) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        await code_of(record(ingest, one, (("authorization", "Basic abc"),)))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    other_tenant = bearer(OTHER_TENANT_TOKEN)
    assert await code_of(record(ingest, one, other_tenant)) == grpc.StatusCode.PERMISSION_DENIED
    # A token of this tenant naming another tenant.
    assert (
        await code_of(record(ingest, one, AUTH, tenant="another-district"))
        == grpc.StatusCode.PERMISSION_DENIED
    )

    school = bearer(SCHOOL_TOKEN)
    assert [r.status for r in await record(ingest, [at("a2")], school)] == [ACCEPTED]
    for event in (at("a3", school="sch2"), at("a4", school="")):
        assert await code_of(record(ingest, [event], school)) == grpc.StatusCode.PERMISSION_DENIED
    # One event of another school denies the whole batch: nothing of it is stored.
    mixed = [at("a5"), at("a6", school="sch2")]
    assert await code_of(record(ingest, mixed, school)) == grpc.StatusCode.PERMISSION_DENIED

    teacher = bearer(TEACHER_TOKEN)
    # A teacher writes about the learners the roster enrols in their class, no one else.
    assert await code_of(record(ingest, [at("a7")], teacher)) == grpc.StatusCode.PERMISSION_DENIED
    enrol = ingest_pb2.UpsertRosterRequest(
        tenant_id=TEST_TENANT,
        records=[
            roster_pb2.RosterRecord(
                enrollment=roster_pb2.Enrollment(
                    sourced_id="enr-1", class_id="c1", user_id="sis-1", role="learner"
                )
            )
        ],
    )
    assert [r.status for r in (await ingest.UpsertRoster(enrol, metadata=AUTH)).results] == [
        ACCEPTED
    ]
    assert [r.status for r in await record(ingest, [at("a7")], teacher)] == [ACCEPTED]
    stranger = at("a7b")
    stranger.learner_id = "sis-2"
    assert await code_of(record(ingest, [stranger], teacher)) == grpc.StatusCode.PERMISSION_DENIED
    assert (
        await code_of(record(ingest, [at("a8", klass="c2")], teacher))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    roster = ingest_pb2.UpsertRosterRequest(
        tenant_id=TEST_TENANT,
        records=[roster_pb2.RosterRecord(org=roster_pb2.Org(sourced_id="sch1"))],
    )
    assert (
        await code_of(ingest.UpsertRoster(roster, metadata=teacher))
        == grpc.StatusCode.PERMISSION_DENIED
    )

    # A token scoped to schools writes the roster of its schools only, and never the catalog.
    def classes(*schools: str) -> ingest_pb2.UpsertRosterRequest:
        return ingest_pb2.UpsertRosterRequest(
            tenant_id=TEST_TENANT,
            records=[
                roster_pb2.RosterRecord(
                    school_class=roster_pb2.SchoolClass(sourced_id=f"c-{s}", school_id=s)
                )
                for s in schools
            ],
        )

    reply = await ingest.UpsertRoster(classes("sch1"), metadata=school)
    assert [r.status for r in reply.results] == [ACCEPTED]
    denied_roster = ingest.UpsertRoster(classes("sch1", "sch2"), metadata=school)
    assert await code_of(denied_roster) == grpc.StatusCode.PERMISSION_DENIED
    catalog = ingest_pb2.UpsertCatalogRequest(
        tenant_id=TEST_TENANT,
        records=[catalog_pb2.CatalogRecord(skill=catalog_pb2.Skill(skill_id="s"))],
    )
    denied_catalog = ingest.UpsertCatalog(catalog, metadata=school)
    assert await code_of(denied_catalog) == grpc.StatusCode.PERMISSION_DENIED

    async def stream() -> AsyncIterator[envelope_pb2.Envelope]:
        yield at("a9", school="sch2")

    with pytest.raises(grpc.aio.AioRpcError) as denied:
        async for _ in ingest.StreamEvents(stream(), metadata=school):
            pass
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def seed(stub: ingest_pb2_grpc.IngestServiceStub) -> None:
    catalog = ingest_pb2.UpsertCatalogRequest(
        tenant_id=TEST_TENANT,
        records=[
            catalog_pb2.CatalogRecord(skill=catalog_pb2.Skill(skill_id="fractions")),
            catalog_pb2.CatalogRecord(item=catalog_pb2.Item(item_id="item-1")),
        ],
    )
    roster = ingest_pb2.UpsertRosterRequest(
        tenant_id=TEST_TENANT,
        records=[
            roster_pb2.RosterRecord(
                school_class=roster_pb2.SchoolClass(sourced_id="c1", school_id="sch1")
            ),
            roster_pb2.RosterRecord(
                learner=roster_pb2.Learner(sourced_id="sis-1", school_id="sch1")
            ),
        ],
        identities=[
            ingest_pb2.LearnerIdentity(
                sourced_id="sis-1", display_name="Ada Lovelace", email="ada@example.org"
            )
        ],
    )
    for reply in (
        await stub.UpsertCatalog(catalog, metadata=AUTH),
        await stub.UpsertRoster(roster, metadata=AUTH),
    ):
        assert all(r.status == ACCEPTED for r in reply.results)


async def test_references_school_consistency_and_a_private_roster(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every logger at DEBUG, as an operator debugging a district would run it, except grpc's
    # AsyncIO loop diagnostics (loop ids, never request data), which deadlock at DEBUG beside
    # kafka-python's threads (see GRPC_AIO_LOGGER).
    log_lines = io.StringIO()
    handler = logging.StreamHandler(log_lines)
    root, grpc_aio = logging.getLogger(), logging.getLogger(GRPC_AIO_LOGGER)
    levels = root.level, grpc_aio.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    grpc_aio.setLevel(logging.INFO)
    try:
        await _references_and_privacy(settings, capsys, log_lines)
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        grpc_aio.setLevel(levels[1])


async def _references_and_privacy(
    settings: Settings, capsys: pytest.CaptureFixture[str], log_lines: io.StringIO
) -> None:
    async with running_ingest(settings) as stub:
        await seed(stub)
        unknown_item = at("r2")
        unknown_item.item_attempted.item_id = "item-9"
        results = await record(
            stub, [at("r1"), unknown_item, at("r3", school="sch2"), at("r4", klass="c9")]
        )
        assert [r.status for r in results] == [ACCEPTED, ACCEPTED, REJECTED, ACCEPTED]
        assert [w.field for w in results[0].warnings] == []
        assert [w.field for w in results[1].warnings] == ["events[1].item_attempted.item_id"]
        assert [(v.field, v.reason) for v in results[2].violations] == [
            ("events[2].class_id", "belongs to another school than school_id")
        ]
        assert [w.field for w in results[3].warnings] == ["events[3].class_id"]

    # A new ingest process knows the roster and catalog from the compacted topics alone.
    async with running_ingest(settings) as again:
        results = await record(again, [at("r5"), at("r6", school="sch2")])
        assert [r.status for r in results] == [ACCEPTED, REJECTED]
        assert list(results[0].warnings) == []

    consumer = create_consumer(
        settings.kafka, group_id=None, consumer_timeout_ms=3_000, auto_offset_reset="earliest"
    )
    consumer.subscribe([settings.kafka.topics.name(t) for t in ("roster", "activity")])
    try:
        raw = b"".join((r.key or b"") + (r.value or b"") for r in consumer)
    finally:
        consumer.close()
    assert b"c1" in raw  # the records are there...
    captured = capsys.readouterr()
    logs = captured.out + captured.err + log_lines.getvalue()
    assert "rpc" in logs  # the request log lines are there...
    for clear in (b"sis-1", b"Ada Lovelace", b"ada@example.org"):
        assert clear not in raw  # ...but no SIS id, name or e-mail on the topics
        assert clear.decode() not in logs  # nor in the logs


async def test_dedup_window_survives_a_restart(settings: Settings) -> None:
    async with running_ingest(settings) as before:
        assert [r.status for r in await record(before, [attempt("d1"), attempt("d2")])] == [
            ACCEPTED,
            ACCEPTED,
        ]

    async with running_ingest(settings) as after:
        results = await record(after, [attempt("d1"), attempt("d2", score=0.0), attempt("d3")])
    assert [r.status for r in results] == [DUPLICATE, REJECTED, ACCEPTED]
    assert [v.field for v in results[1].violations] == ["events[1].event_id"]
    assert sorted(e.event_id for e in topic_values(settings)) == ["d1", "d2", "d3"]
