"""The ingest use case with an in-memory publisher: per-item answers, pseudonymization, dedup."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from trellis.common.codec import Encoded, decode_envelope
from trellis.common.pb.events.v1 import envelope_pb2, roster_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2
from trellis.common.pseudonym import Pseudonymizer
from trellis.ingest.catalog import CatalogView
from trellis.ingest.dedup import DedupWindow, fingerprint
from trellis.ingest.identity import open_identity
from trellis.ingest.roster import RosterView
from trellis.ingest.service import IngestService, Status, UnmatchedIdentity

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TENANT = "district-a"


class MemoryPublisher:
    def __init__(self, fail: bool = False) -> None:
        self.records: dict[str, list[Encoded]] = {}
        self.fail = fail

    async def __call__(self, topic: str, records: Sequence[Encoded]) -> list[bool]:
        if self.fail:
            return [False] * len(records)
        self.records.setdefault(topic, []).extend(records)
        return [True] * len(records)


def attempt(event_id: str, learner: str = "sis-1", correct: bool = True) -> envelope_pb2.Envelope:
    event = envelope_pb2.Envelope(event_id=event_id, learner_id=learner, class_id="c1")
    event.occurred_at.FromDatetime(NOW - timedelta(minutes=1))
    event.item_attempted.item_id = "item-1"
    event.item_attempted.skill_ids.append("fractions")
    event.item_attempted.correct = correct
    return event


@pytest.fixture
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer({TENANT: {1: SecretStr("k1")}})


async def test_mixed_batch_answers_each_item(pseudonymizer: Pseudonymizer) -> None:
    publisher = MemoryPublisher()
    service = IngestService(publisher, pseudonymizer, DedupWindow(100), CatalogView())
    bad_score = attempt("e3")
    bad_score.item_attempted.score = 1.5
    future = attempt("e4")
    future.occurred_at.FromDatetime(NOW + timedelta(hours=1))
    batch = [attempt("e1"), attempt("e1"), bad_score, future, attempt("e1", correct=False)]

    outcomes = await service.record_events(TENANT, batch, NOW)

    assert [o.status for o in outcomes] == [
        Status.ACCEPTED,
        Status.DUPLICATE,
        Status.REJECTED,
        Status.REJECTED,
        Status.REJECTED,
    ]
    assert [v.field for v in outcomes[2].violations] == ["events[2].item_attempted.score"]
    assert [v.field for v in outcomes[3].violations] == ["events[3].occurred_at"]
    assert [v.field for v in outcomes[4].violations] == ["events[4].event_id"]
    assert len(publisher.records["activity"]) == 1


async def test_stored_events_are_pseudonymous(pseudonymizer: Pseudonymizer) -> None:
    publisher = MemoryPublisher()
    service = IngestService(publisher, pseudonymizer, DedupWindow(100), CatalogView())

    await service.record_events(TENANT, [attempt("e1", learner="sis-42")], NOW)

    stored = publisher.records["activity"][0]
    event = decode_envelope(stored.value, stored.headers)
    assert event.learner_id == pseudonymizer.pseudonymize(TENANT, "sis-42")
    assert b"sis-42" not in stored.value and b"sis-42" not in stored.key
    assert stored.key == f"{TENANT}/{event.learner_id}".encode()
    assert event.tenant_id == TENANT and event.ingested_at.ToDatetime(UTC) == NOW


async def test_duplicate_across_batches_and_not_stored(pseudonymizer: Pseudonymizer) -> None:
    publisher = MemoryPublisher()
    service = IngestService(publisher, pseudonymizer, DedupWindow(100), CatalogView())
    await service.record_events(TENANT, [attempt("e1")], NOW)

    again = await service.record_events(TENANT, [attempt("e1")], NOW + timedelta(seconds=5))
    assert again[0].status is Status.DUPLICATE

    publisher.fail = True
    lost = await service.record_events(TENANT, [attempt("e2")], NOW)
    assert lost[0].status is Status.NOT_STORED
    publisher.fail = False
    retried = await service.record_events(TENANT, [attempt("e2")], NOW)
    assert retried[0].status is Status.ACCEPTED


async def test_roster_learners_and_enrollments_share_the_pseudonym(
    pseudonymizer: Pseudonymizer,
) -> None:
    publisher = MemoryPublisher()
    service = IngestService(publisher, pseudonymizer, DedupWindow(100), CatalogView())
    learner = roster_pb2.RosterRecord(learner=roster_pb2.Learner(sourced_id="sis-7", grade="5"))
    enrollment = roster_pb2.RosterRecord(
        enrollment=roster_pb2.Enrollment(
            sourced_id="enr-1", class_id="c1", user_id="sis-7", role="learner"
        )
    )
    bad = roster_pb2.RosterRecord(enrollment=roster_pb2.Enrollment(sourced_id="enr-2"))

    outcomes = await service.upsert_roster(TENANT, [learner, enrollment, bad])

    assert [o.status for o in outcomes] == [Status.ACCEPTED, Status.ACCEPTED, Status.REJECTED]
    assert {v.field for v in outcomes[2].violations} == {
        "records[2].enrollment.class_id",
        "records[2].enrollment.user_id",
        "records[2].enrollment.role",
    }
    pseudonym = pseudonymizer.pseudonymize(TENANT, "sis-7")
    stored = [roster_pb2.RosterRecord.FromString(r.value) for r in publisher.records["roster"]]
    assert stored[0].learner.sourced_id == pseudonym == stored[1].enrollment.user_id
    assert publisher.records["roster"][0].key == f"{TENANT}/learner/{pseudonym}".encode()


async def test_roster_seals_identities_and_never_stores_clear_text(
    pseudonymizer: Pseudonymizer,
) -> None:
    publisher = MemoryPublisher()
    service = IngestService(publisher, pseudonymizer, DedupWindow(100), CatalogView())
    smuggled = roster_pb2.RosterRecord(
        learner=roster_pb2.Learner(sourced_id="sis-8", sealed_identity=b"Grace Hopper in clear")
    )
    learner = roster_pb2.RosterRecord(learner=roster_pb2.Learner(sourced_id="sis-7", grade="5"))
    identity = ingest_pb2.LearnerIdentity(
        sourced_id="sis-7", display_name="Ada Lovelace", email="ada@example.org"
    )

    outcomes = await service.upsert_roster(TENANT, [learner, smuggled], [identity])

    assert [o.status for o in outcomes] == [Status.ACCEPTED, Status.ACCEPTED]
    raw = b"".join(r.key + r.value for r in publisher.records["roster"])
    for clear in (b"sis-7", b"sis-8", b"Ada Lovelace", b"ada@example.org", b"Grace Hopper"):
        assert clear not in raw
    stored = [roster_pb2.RosterRecord.FromString(r.value) for r in publisher.records["roster"]]
    pseudonym = pseudonymizer.pseudonymize(TENANT, "sis-7")
    assert open_identity(b"k1", TENANT, pseudonym, stored[0].learner.sealed_identity) == {
        "sis_id": "sis-7",
        "display_name": "Ada Lovelace",
        "email": "ada@example.org",
    }
    assert stored[1].learner.sealed_identity == b""

    with pytest.raises(UnmatchedIdentity) as unmatched:
        await service.upsert_roster(
            TENANT, [learner], [identity, ingest_pb2.LearnerIdentity(sourced_id="sis-9")]
        )
    assert unmatched.value.field == "identities[1].sourced_id"


async def test_references_flagged_or_rejected_and_school_checked(
    pseudonymizer: Pseudonymizer,
) -> None:
    publisher = MemoryPublisher()
    catalog, roster = CatalogView(), RosterView()
    flagging = IngestService(publisher, pseudonymizer, DedupWindow(100), catalog, roster, "flag")
    rejecting = IngestService(publisher, pseudonymizer, DedupWindow(100), catalog, roster, "reject")
    await flagging.upsert_roster(
        TENANT,
        [
            roster_pb2.RosterRecord(
                school_class=roster_pb2.SchoolClass(sourced_id="c1", school_id="s1")
            )
        ],
    )

    flagged = await flagging.record_events(TENANT, [attempt("e1")], NOW)
    assert flagged[0].status is Status.ACCEPTED
    assert [w.field for w in flagged[0].warnings] == [
        "events[0].item_attempted.item_id",
        "events[0].item_attempted.skill_ids[0]",
    ]
    rejected = await rejecting.record_events(TENANT, [attempt("e2")], NOW)
    assert rejected[0].status is Status.REJECTED
    elsewhere = attempt("e3")
    elsewhere.school_id = "s2"
    wrong_school = await flagging.record_events(TENANT, [elsewhere], NOW)
    assert wrong_school[0].status is Status.REJECTED
    assert [v.field for v in wrong_school[0].violations] == ["events[0].class_id"]
    assert len(publisher.records["activity"]) == 1


async def test_fingerprint_is_computable_from_the_stored_record(
    pseudonymizer: Pseudonymizer,
) -> None:
    publisher = MemoryPublisher()
    service = IngestService(publisher, pseudonymizer, DedupWindow(100), CatalogView())
    await service.record_events(TENANT, [attempt("e1")], NOW)

    # A new process rebuilds its window from the topic only.
    stored = publisher.records["activity"][0]
    event = decode_envelope(stored.value, stored.headers)
    window = DedupWindow(100)
    window.remember(event.tenant_id, event.event_id, fingerprint(event))
    restarted = IngestService(publisher, pseudonymizer, window, CatalogView())

    later = NOW + timedelta(minutes=5)
    again = await restarted.record_events(TENANT, [attempt("e1")], later)
    changed = await restarted.record_events(TENANT, [attempt("e1", correct=False)], later)
    assert again[0].status is Status.DUPLICATE
    assert changed[0].status is Status.REJECTED


async def test_same_id_in_two_concurrent_calls_is_stored_once(
    pseudonymizer: Pseudonymizer,
) -> None:
    release = asyncio.Event()

    class SlowPublisher(MemoryPublisher):
        async def __call__(self, topic: str, records: Sequence[Encoded]) -> list[bool]:
            await release.wait()
            return await super().__call__(topic, records)

    publisher = SlowPublisher()
    service = IngestService(publisher, pseudonymizer, DedupWindow(100), CatalogView())
    first = asyncio.ensure_future(service.record_events(TENANT, [attempt("e1")], NOW))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(
        service.record_events(TENANT, [attempt("e1"), attempt("e1", correct=False)], NOW)
    )
    await asyncio.sleep(0)
    release.set()

    assert [o.status for o in await first] == [Status.ACCEPTED]
    assert [o.status for o in await second] == [Status.NOT_STORED, Status.REJECTED]
    assert len(publisher.records["activity"]) == 1
    retried = await service.record_events(TENANT, [attempt("e1")], NOW)
    assert retried[0].status is Status.DUPLICATE
