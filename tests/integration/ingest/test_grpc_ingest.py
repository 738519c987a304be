"""Ingest over gRPC against the real broker: per-item answers, and exactly the accepted events on
the activity topic, once each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from prometheus_client import REGISTRY

from tests.conftest import TEST_TENANT
from trellis.common.codec import decode_envelope
from trellis.common.grpc.errors import bad_request_fields, bad_request_violations
from trellis.common.kafka import create_consumer
from trellis.common.pb.events.v1 import catalog_pb2, envelope_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.settings import Principal, Settings
from trellis.ingest.adapters.follower import catalog_follower
from trellis.ingest.app import create_ingest
from trellis.ingest.catalog import CatalogView

TOKEN = "ingest-test-token"
OTHER_TENANT_TOKEN = "other-tenant-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
OCCURRED = datetime.now(UTC) - timedelta(minutes=1)


SCHOOL_TOKEN = "school-one-token"
TEACHER_TOKEN = "teacher-token"
TOKENS = {
    TOKEN: Principal(tenant_id=TEST_TENANT),
    OTHER_TENANT_TOKEN: Principal(tenant_id="another-district"),
    SCHOOL_TOKEN: Principal(tenant_id=TEST_TENANT, schools=["sch1"]),
    TEACHER_TOKEN: Principal(
        tenant_id=TEST_TENANT, role="teacher", schools=["sch1"], classes=["c1"]
    ),
}


def small(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"max_batch_size": 10})}
    )


@asynccontextmanager
async def running_ingest(settings: Settings) -> AsyncIterator[ingest_pb2_grpc.IngestServiceStub]:
    app = create_ingest(small(settings), TOKENS, port=0)
    await app.start(ready_timeout_s=30)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            yield ingest_pb2_grpc.IngestServiceStub(channel)
    finally:
        await app.close()


@pytest.fixture
async def ingest(settings: Settings) -> AsyncIterator[ingest_pb2_grpc.IngestServiceStub]:
    async with running_ingest(settings) as stub:
        yield stub


def attempt(event_id: str, score: float = 1.0) -> envelope_pb2.Envelope:
    event = envelope_pb2.Envelope(event_id=event_id, learner_id="sis-1", class_id="c1")
    event.occurred_at.FromDatetime(OCCURRED)
    event.item_attempted.item_id = "item-1"
    event.item_attempted.skill_ids.append("fractions")
    event.item_attempted.score = score
    return event


def topic_values(settings: Settings) -> list[envelope_pb2.Envelope]:
    consumer = create_consumer(
        settings.kafka, group_id=None, consumer_timeout_ms=3_000, auto_offset_reset="earliest"
    )
    consumer.subscribe([settings.kafka.topics.name("activity")])
    try:
        return [decode_envelope(r.value, r.headers) for r in consumer]
    finally:
        consumer.close()


async def test_mixed_batch_on_the_real_broker(
    ingest: ingest_pb2_grpc.IngestServiceStub, settings: Settings
) -> None:
    conflicting = attempt("e1", score=0.0)
    batch = [attempt("e1"), attempt("e2"), attempt("e3", score=2.0), attempt("e1"), conflicting]
    reply = await ingest.RecordEvents(
        ingest_pb2.RecordEventsRequest(tenant_id=TEST_TENANT, events=batch), metadata=AUTH
    )
    again = await ingest.RecordEvents(
        ingest_pb2.RecordEventsRequest(tenant_id=TEST_TENANT, events=[attempt("e2")]),
        metadata=AUTH,
    )

    assert [r.status for r in reply.results] == [
        ingest_pb2.ITEM_STATUS_ACCEPTED,
        ingest_pb2.ITEM_STATUS_ACCEPTED,
        ingest_pb2.ITEM_STATUS_REJECTED,
        ingest_pb2.ITEM_STATUS_DUPLICATE,
        ingest_pb2.ITEM_STATUS_REJECTED,
    ]
    assert [v.field for v in reply.results[2].violations] == ["events[2].item_attempted.score"]
    assert [v.field for v in reply.results[4].violations] == ["events[4].event_id"]
    assert again.results[0].status == ingest_pb2.ITEM_STATUS_DUPLICATE
    rejected_score = {
        "tenant": TEST_TENANT,
        "kind": "activity",
        "status": "rejected",
        "reason": "events[].item_attempted.score must be within 0..1",
    }
    assert REGISTRY.get_sample_value("trellis_ingest_items_total", rejected_score) == 1.0
    stored = topic_values(settings)
    assert sorted(e.event_id for e in stored) == ["e1", "e2"]
    assert all(e.learner_id != "sis-1" and e.tenant_id == TEST_TENANT for e in stored)


async def test_whole_request_errors(ingest: ingest_pb2_grpc.IngestServiceStub) -> None:
    too_many = [attempt(f"e{i}") for i in range(11)]
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await ingest.RecordEvents(
            ingest_pb2.RecordEventsRequest(tenant_id=TEST_TENANT, events=too_many), metadata=AUTH
        )
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(invalid.value) == ["events"]

    with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
        await ingest.RecordEvents(
            ingest_pb2.RecordEventsRequest(tenant_id=TEST_TENANT, events=[attempt("x")])
        )
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED

    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await ingest.RecordEvents(
            ingest_pb2.RecordEventsRequest(tenant_id=TEST_TENANT, events=[attempt("x")]),
            metadata=(("authorization", f"Bearer {OTHER_TENANT_TOKEN}"),),
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_stream_answers_each_event_in_order(
    ingest: ingest_pb2_grpc.IngestServiceStub,
) -> None:
    async def events() -> AsyncIterator[envelope_pb2.Envelope]:
        for event in (attempt("s1"), attempt("s2", score=-1.0), attempt("s1")):
            yield event

    results = [r async for r in ingest.StreamEvents(events(), metadata=AUTH)]

    assert [(r.index, r.status) for r in results] == [
        (0, ingest_pb2.ITEM_STATUS_ACCEPTED),
        (1, ingest_pb2.ITEM_STATUS_REJECTED),
        (2, ingest_pb2.ITEM_STATUS_DUPLICATE),
    ]
    assert results[1].violations[0].field == "events[1].item_attempted.score"


async def test_catalog_cycle_refuses_the_batch_and_the_replica_follows(
    ingest: ingest_pb2_grpc.IngestServiceStub, settings: Settings
) -> None:
    def skill(skill_id: str, *prerequisites: str) -> catalog_pb2.CatalogRecord:
        return catalog_pb2.CatalogRecord(
            skill=catalog_pb2.Skill(skill_id=skill_id, prerequisite_ids=prerequisites)
        )

    chain = await ingest.UpsertCatalog(
        ingest_pb2.UpsertCatalogRequest(
            tenant_id=TEST_TENANT, records=[skill("b", "a"), skill("c", "b")]
        ),
        metadata=AUTH,
    )
    assert [r.status for r in chain.results] == [ingest_pb2.ITEM_STATUS_ACCEPTED] * 2

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ingest.UpsertCatalog(
            ingest_pb2.UpsertCatalogRequest(tenant_id=TEST_TENANT, records=[skill("a", "c")]),
            metadata=AUTH,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_violations(refused.value) == [
        ("records", "prerequisite cycle: a -> c -> b -> a")
    ]

    # A fresh replica built from the compacted topic knows the stored skills too.
    replica = CatalogView()
    follower = catalog_follower(settings.kafka, replica)
    follower.start()
    try:
        assert follower.caught_up.wait(timeout=30)
        assert replica.prerequisites(TEST_TENANT) == {"b": ("a",), "c": ("b",)}
    finally:
        follower.stop()
