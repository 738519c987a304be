"""A token scoped to a school, through the real ingest gRPC server and broker: it writes about the
learners the roster enrols in its school (or does not enrol yet), erases only those it enrols
there, enrols in its classes no learner of another school, and a batch with one item about
another school's learner stores nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from tests.conftest import TEST_TENANT
from tests.integration.ingest.test_grpc_ingest import (
    AUTH,
    SCHOOL_TOKEN,
    attempt,
    running_ingest,
    topic_values,
)
from trellis.common.kafka import create_consumer
from trellis.common.pb.events.v1 import envelope_pb2, roster_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.settings import Settings
from trellis.ingest.scope import (
    ERASURE_OUT_OF_SCOPE,
    LEARNER_OUT_OF_SCOPE,
    ROSTER_LEARNER_OUT_OF_SCOPE,
    UNKNOWN_LEARNER,
)

ACCEPTED = ingest_pb2.ITEM_STATUS_ACCEPTED
SCHOOL = (("authorization", f"Bearer {SCHOOL_TOKEN}"),)  # scoped to sch1


def about(event_id: str, learner: str, erasure: bool = False) -> envelope_pb2.Envelope:
    """An event naming the token's school and no class, about a learner (SIS id)."""
    event = attempt(event_id)
    event.learner_id, event.school_id, event.class_id = learner, "sch1", ""
    if erasure:
        event.learner_erasure_requested.SetInParent()
    return event


def enrollment(
    sourced_id: str, class_id: str, learner: str, school_id: str = ""
) -> roster_pb2.RosterRecord:
    return roster_pb2.RosterRecord(
        enrollment=roster_pb2.Enrollment(
            sourced_id=sourced_id,
            class_id=class_id,
            user_id=learner,
            role="learner",
            school_id=school_id,
        )
    )


async def enrol_in_two_schools(stub: ingest_pb2_grpc.IngestServiceStub) -> None:
    """By a tenant-wide token: sis-a in class ca of sch1, sis-b in class cb of sch2."""
    request = ingest_pb2.UpsertRosterRequest(
        tenant_id=TEST_TENANT,
        records=[
            roster_pb2.RosterRecord(
                school_class=roster_pb2.SchoolClass(sourced_id="ca", school_id="sch1")
            ),
            roster_pb2.RosterRecord(
                school_class=roster_pb2.SchoolClass(sourced_id="cb", school_id="sch2")
            ),
            enrollment("en-a", "ca", "sis-a"),
            enrollment("en-b", "cb", "sis-b"),
        ],
    )
    reply = await stub.UpsertRoster(request, metadata=AUTH)
    assert [r.status for r in reply.results] == [ACCEPTED] * 4


async def record(
    stub: ingest_pb2_grpc.IngestServiceStub,
    metadata: tuple[tuple[str, str], ...],
    *events: envelope_pb2.Envelope,
) -> list[ingest_pb2.ItemResult]:
    request = ingest_pb2.RecordEventsRequest(tenant_id=TEST_TENANT, events=events)
    return list((await stub.RecordEvents(request, metadata=metadata)).results)


async def denied(call: object) -> str:
    """The details of a PERMISSION_DENIED call."""
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    return error.value.details() or ""


async def test_a_school_token_writes_and_erases_learners_of_its_school_only(
    settings: Settings,
) -> None:
    async with running_ingest(settings) as stub:
        await enrol_in_two_schools(stub)

        results = await record(stub, SCHOOL, about("a1", "sis-a"), about("n1", "sis-new"))
        assert [r.status for r in results] == [ACCEPTED, ACCEPTED]
        assert "events[0].learner_id" not in [w.field for w in results[0].warnings]
        assert (results[1].warnings[0].field, results[1].warnings[0].reason) == (
            "events[1].learner_id",
            UNKNOWN_LEARNER,
        )

        # Another school's learner, alone or beside one of sch1; an erasure of another school's
        # learner or of one the roster does not enrol: each batch denied as a whole.
        assert await denied(record(stub, SCHOOL, about("b1", "sis-b"))) == (
            f"events[0].learner_id: {LEARNER_OUT_OF_SCOPE}"
        )
        mixed = record(stub, SCHOOL, about("a2", "sis-a"), about("b2", "sis-b"))
        assert await denied(mixed) == f"events[1].learner_id: {LEARNER_OUT_OF_SCOPE}"
        for learner in ("sis-b", "sis-new"):
            erasure = record(stub, SCHOOL, about(f"x-{learner}", learner, erasure=True))
            assert await denied(erasure) == f"events[0].learner_id: {ERASURE_OUT_OF_SCOPE}"

        async def stream() -> AsyncIterator[envelope_pb2.Envelope]:
            yield about("s1", "sis-a")
            yield about("x-stream", "sis-b", erasure=True)

        answers: list[ingest_pb2.ItemResult] = []

        async def consume() -> None:
            async for answer in stub.StreamEvents(stream(), metadata=SCHOOL):
                answers.append(answer)

        assert await denied(consume()) == f"events[1].learner_id: {ERASURE_OUT_OF_SCOPE}"
        assert [a.status for a in answers] == [ACCEPTED]

        erased = await record(stub, SCHOOL, about("x-sis-a", "sis-a", erasure=True))
        assert [r.status for r in erased] == [ACCEPTED]
        # A tenant-wide token erases any learner of the tenant.
        erased = await record(stub, AUTH, about("x-all-b", "sis-b", erasure=True))
        assert [r.status for r in erased] == [ACCEPTED]

    assert sorted(e.event_id for e in topic_values(settings)) == [
        "a1",
        "n1",
        "s1",
        "x-all-b",
        "x-sis-a",
    ]


async def test_a_school_token_cannot_enrol_another_schools_learner(settings: Settings) -> None:
    async with running_ingest(settings) as stub:
        await enrol_in_two_schools(stub)

        async def upsert(*records: roster_pb2.RosterRecord) -> ingest_pb2.UpsertResponse:
            request = ingest_pb2.UpsertRosterRequest(tenant_id=TEST_TENANT, records=records)
            return await stub.UpsertRoster(request, metadata=SCHOOL)

        # sis-b is sch2's: enrolled in sch1's class ca it would be in the token's scope (its
        # events, reads). Beside a new learner of sch1, the whole batch is denied.
        new_learner = roster_pb2.RosterRecord(
            learner=roster_pb2.Learner(sourced_id="sis-n", school_id="sch1")
        )
        takeover = enrollment("en-take", "ca", "sis-b", school_id="sch1")
        for batch, index in (([takeover], 0), ([new_learner, takeover], 1)):
            assert await denied(upsert(*batch)) == (
                f"records[{index}].enrollment.user_id: {ROSTER_LEARNER_OUT_OF_SCOPE}"
            )
        assert await denied(record(stub, SCHOOL, about("b1", "sis-b"))) == (
            f"events[0].learner_id: {LEARNER_OUT_OF_SCOPE}"
        )

        # A new learner, record and enrollment together; sis-a, of sch1 already, once more.
        reply = await upsert(
            new_learner,
            enrollment("en-n", "ca", "sis-n", school_id="sch1"),
            enrollment("en-a2", "ca", "sis-a", school_id="sch1"),
        )
        assert [r.status for r in reply.results] == [ACCEPTED] * 3
        results = await record(stub, SCHOOL, about("n1", "sis-n"))
        assert [r.status for r in results] == [ACCEPTED]
        assert "events[0].learner_id" not in [w.field for w in results[0].warnings]  # in sch1

    # Every record but the denied batches': sis-n's record once (its key holds a pseudonym).
    keys = roster_keys(settings)
    learners = [k for k in keys if k.startswith(f"{TEST_TENANT}/learner/")]
    assert len(learners) == 1
    assert sorted(set(keys) - set(learners)) == [
        f"{TEST_TENANT}/{key}"
        for key in (
            "enrollment/en-a",
            "enrollment/en-a2",
            "enrollment/en-b",
            "enrollment/en-n",
            "school_class/ca",
            "school_class/cb",
        )
    ]


def roster_keys(settings: Settings) -> list[str]:
    consumer = create_consumer(
        settings.kafka, group_id=None, consumer_timeout_ms=3_000, auto_offset_reset="earliest"
    )
    consumer.subscribe([settings.kafka.topics.name("roster")])
    try:
        return [(r.key or b"").decode() for r in consumer]
    finally:
        consumer.close()
