"""Learner profile and erasure through the worker process on the real broker.

Profile events and an attempt (with class ids) build the profile, the classes and the class
mastery that the read API answers; an erasure then deletes the learner's state (a tombstone on the
changelog) and announces `LearnerErased`; the erased learner's old attempt, re-sent, stays erased,
while a later attempt starts a new state. A replacement worker rebuilds both tables from their
changelogs and keeps honouring the erasure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
import pytest
from kafka import TopicPartition

from tests.conftest import TEST_TENANT
from tests.integration.mastery.envelopes import learner_event
from tests.integration.mastery.roster import publish_roster
from tests.integration.mastery.test_worker import (
    AFTER_ONE_CORRECT,
    SIS_ID,
    Collector,
    _attempt,
    _stop,
)
from tests.integration.mastery.workers import TOKEN, Worker, wait_until_serving
from trellis.common.codec import encode_envelope, learner_key
from trellis.common.faust_app import changelog_topic_name
from trellis.common.kafka import create_consumer, create_producer
from trellis.common.pb.events.v1 import activity_pb2, envelope_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2 as api_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Settings
from trellis.mastery.events import output_event_id
from trellis.mastery.stream.tables import LEARNERS

AUTH = (("authorization", f"Bearer {TOKEN}"),)


def _stub(worker: Worker) -> tuple[grpc.Channel, mastery_pb2_grpc.MasteryServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{worker.port}")
    return channel, mastery_pb2_grpc.MasteryServiceStub(channel)


def _profile(worker: Worker) -> api_pb2.LearnerProfile:
    channel, stub = _stub(worker)
    with channel:
        reply: api_pb2.LearnerProfile = stub.GetLearnerProfile(
            api_pb2.GetLearnerProfileRequest(tenant_id=TEST_TENANT, learner_id=SIS_ID),
            metadata=AUTH,
            timeout=5.0,
        )
        return reply


def _class(worker: Worker, class_id: str) -> api_pb2.ClassMastery:
    channel, stub = _stub(worker)
    with channel:
        reply: api_pb2.ClassMastery = stub.GetClassMastery(
            api_pb2.GetClassMasteryRequest(tenant_id=TEST_TENANT, class_id=class_id),
            metadata=AUTH,
            timeout=5.0,
        )
        return reply


def _changelog(settings: Settings, key: bytes) -> list[bytes | None]:
    """The values of `key` on the learners table's changelog, in order."""
    topic = changelog_topic_name(settings.mastery.consumer_group, LEARNERS)
    consumer = create_consumer(settings.kafka, None)
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.kafka.topics.partitions)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        values: list[bytes | None] = []
        deadline = time.monotonic() + 10
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            assert time.monotonic() < deadline, "changelog not read within 10 s"
            for records in consumer.poll(timeout_ms=200).values():
                values += [r.value for r in records if r.key == key]
        return values
    finally:
        consumer.close()


def test_profile_reads_then_erasure_is_final_across_a_restart(
    settings: Settings,
    start_worker: Callable[[str], Worker],
) -> None:
    learner = Pseudonymizer(settings.pseudonym.all_keys()).pseudonymize(TEST_TENANT, SIS_ID)
    publish_roster(settings, {"class-7a": [learner]})
    worker = start_worker("first")
    wait_until_serving(worker)
    key = learner_key(TEST_TENANT, learner)
    activity = settings.kafka.topics.name("activity")
    t0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
    producer = create_producer(settings.kafka)
    collector = Collector(settings)

    def send(*envelopes: envelope_pb2.Envelope) -> None:
        for envelope in envelopes:
            encoded = encode_envelope(envelope)
            producer.send(activity, key=encoded.key, value=encoded.value, headers=encoded.headers)
        producer.flush()

    try:
        goal = learner_event("goal-1", learner, t0)
        goal.goal_set.CopyFrom(activity_pb2.GoalSet(goal_id="g1", skill_id="fractions.add"))
        interests = learner_event("interests-1", learner, t0)
        interests.interest_declared.tags.extend(["space", "music"])
        pin = learner_event("pin-1", learner, t0)
        pin.class_id = "class-7b"
        pin.activity_assigned.CopyFrom(
            activity_pb2.ActivityAssigned(activity_id="item-9", activity_kind="item")
        )
        accommodations = learner_event("acc-1", learner, t0)
        accommodations.accommodation_set.accommodations.append("extended_time")
        old_attempt = _attempt("attempt-1", learner, correct=True)  # 2026-09-01 08:30
        send(goal, interests, pin, accommodations, old_attempt)
        collector.until(lambda: bool(collector.updates("attempt-1")), "the update", worker)

        profile = _profile(worker)
        assert [g.goal_id for g in profile.goals] == ["g1"]
        assert list(profile.interests) == ["space", "music"]
        assert [p.activity_id for p in profile.pins] == ["item-9"]
        assert list(profile.accommodations) == ["extended_time"]
        assert list(profile.class_ids) == ["class-7a", "class-7b"]
        [member] = _class(worker, "class-7a").learners
        assert member.learner_id == learner
        assert member.skills[0].p_mastered == pytest.approx(AFTER_ONE_CORRECT)

        erasure = learner_event("erase-1", learner, datetime(2026, 9, 1, 9, 0, tzinfo=UTC))
        erasure.learner_erasure_requested.reason = "parent request"
        # Then the erased learner's old attempt re-sent, and a new attempt after the request.
        new_attempt = _attempt("attempt-2", learner, correct=True)
        new_attempt.occurred_at.FromDatetime(datetime(2026, 9, 1, 10, 0, tzinfo=UTC))
        send(erasure, old_attempt, new_attempt)
        collector.until(lambda: bool(collector.updates("attempt-2")), "the new update", worker)

        erased = [e for e in collector.mastery if e.WhichOneof("payload") == "learner_erased"]
        assert [e.event_id for e in erased] == [output_event_id("erase-1", "learner_erased", "")]
        assert len(collector.updates("attempt-1")) == 1  # the re-sent attempt emitted nothing
        [fresh] = collector.updates("attempt-2")
        assert fresh.mastery_updated.attempts == 1
        assert fresh.mastery_updated.p_before == pytest.approx(0.3)
        profile = _profile(worker)
        assert (list(profile.goals), list(profile.interests), list(profile.pins)) == ([], [], [])
        assert list(profile.class_ids) == ["class-7a"]  # the new attempt's class only
    finally:
        producer.close()
        collector.consumer.close()

    # The changelog holds the learner's values, then a tombstone, then the new state.
    values = _changelog(settings, key)
    assert None in values
    tombstone = values.index(None)
    assert tombstone > 0 and all(v is not None for v in values[tombstone + 1 :])

    _stop(worker)
    replacement = start_worker("replacement")
    wait_until_serving(replacement)
    producer = create_producer(settings.kafka)
    collector = Collector(settings)
    try:
        third = _attempt("attempt-3", learner, correct=True)
        third.occurred_at.FromDatetime(datetime(2026, 9, 1, 11, 0, tzinfo=UTC))
        send(old_attempt, third)
        collector.until(lambda: bool(collector.updates("attempt-3")), "the third", replacement)
        assert len(collector.updates("attempt-1")) == 1  # still erased after the restart
        assert collector.updates("attempt-3")[0].mastery_updated.attempts == 2
        assert [g.goal_id for g in _profile(replacement).goals] == []
    finally:
        producer.close()
        collector.consumer.close()
    _stop(replacement)
