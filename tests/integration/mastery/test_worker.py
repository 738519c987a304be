"""The mastery worker as a process on the real broker: `python -m trellis.mastery worker`.

One learner's events, in one partition and so in order: an attempt, the same attempt again, bytes
that are no envelope, a second attempt. Checked: the mastery events, the dead letter, the read
API, a clean stop on SIGTERM that commits the consumed offsets, and a replacement worker that
rebuilds the state from the changelog alone.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from kafka import TopicPartition

from tests.conftest import TEST_TENANT
from tests.integration.mastery.envelopes import learner_event
from tests.integration.mastery.workers import TOKEN, Worker, wait_until_serving
from trellis.common.codec import decode_envelope, encode_envelope, learner_key
from trellis.common.kafka import create_consumer, create_producer
from trellis.common.pb.events.v1 import activity_pb2, envelope_pb2, mastery_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2 as api_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Settings
from trellis.mastery.events import output_event_id

SIS_ID = "sis-4711"
STOP_GRACE_S = 15.0
AFTER_ONE_CORRECT = 0.6926829268  # 142/205, see tests/unit/mastery/test_domain.py
# then wrong: posterior = (142/205)*0.1 / ((142/205)*0.1 + (63/205)*0.8) = 71/323;
#   after = 71/323 + (252/323)*0.1 = 481/1615 = 0.297832817...
AFTER_CORRECT_THEN_WRONG = 0.2978328173


def _attempt(event_id: str, learner_id: str, correct: bool) -> envelope_pb2.Envelope:
    return learner_event(
        event_id,
        learner_id,
        datetime(2026, 9, 1, 8, 30, tzinfo=UTC),
        item_attempted=activity_pb2.ItemAttempted(
            item_id="item-1", skill_ids=["fractions.add"], correct=correct, attempt_number=1
        ),
    )


class Collector:
    """Reads the mastery and dead-letter topics from the beginning, accumulating records."""

    def __init__(self, settings: Settings) -> None:
        topics = settings.kafka.topics
        self.mastery_topic = topics.name("mastery")
        self.deadletter_topic = topics.name("deadletter")
        self.consumer = create_consumer(settings.kafka, None)
        self.consumer.assign(
            [
                TopicPartition(topic, p)
                for topic in (self.mastery_topic, self.deadletter_topic)
                for p in range(topics.partitions)
            ]
        )
        self.consumer.seek_to_beginning()
        self.mastery: list[envelope_pb2.Envelope] = []
        self.letters: list[envelope_pb2.DeadLetter] = []

    def until(
        self, done: Callable[[], bool], what: str, worker: Worker, timeout: float = 20.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}:\n{worker.output()}")
            for records in self.consumer.poll(timeout_ms=200).values():
                for record in records:
                    if record.topic == self.mastery_topic:
                        self.mastery.append(decode_envelope(record.value, record.headers))
                    else:
                        self.letters.append(envelope_pb2.DeadLetter.FromString(record.value))

    def updates(self, cause: str) -> list[envelope_pb2.Envelope]:
        return [
            e
            for e in self.mastery
            if e.WhichOneof("payload") == "mastery_updated"
            and e.mastery_updated.cause_event_id == cause
        ]


def _read_mastery(worker: Worker) -> api_pb2.LearnerMastery:
    with grpc.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
        reply: api_pb2.LearnerMastery = mastery_pb2_grpc.MasteryServiceStub(
            channel
        ).GetLearnerMastery(
            api_pb2.GetLearnerMasteryRequest(tenant_id=TEST_TENANT, learner_id=SIS_ID),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
            timeout=5.0,
        )
        return reply


def _committed_equals_end(settings: Settings) -> dict[str, Any]:
    topic = settings.kafka.topics.name("activity")
    partitions = [TopicPartition(topic, p) for p in range(settings.kafka.topics.partitions)]
    # Reads the group's committed offsets without joining the group.
    consumer = create_consumer(settings.kafka, settings.mastery.consumer_group)
    try:
        ends = consumer.end_offsets(partitions)
        return {
            str(tp.partition): (consumer.committed(tp), ends[tp]) for tp in partitions if ends[tp]
        }
    finally:
        consumer.close()


def _stop(worker: Worker) -> float:
    """SIGTERM; asserts a clean exit within the grace period and returns how long it took."""
    stopping = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    try:
        code = worker.process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker did not stop within {STOP_GRACE_S}s of SIGTERM:\n{worker.output()}")
    assert code == 0, worker.output()
    assert "LeaveGroup request succeeded" in worker.output()
    return time.monotonic() - stopping


def test_worker_applies_dedupes_dead_letters_and_stops_cleanly(
    settings: Settings, start_worker: Callable[[str], Worker]
) -> None:
    worker = start_worker("first")
    started = time.monotonic()
    wait_until_serving(worker)
    ready_after = time.monotonic() - started

    learner = Pseudonymizer(settings.pseudonym.all_keys()).pseudonymize(TEST_TENANT, SIS_ID)
    key = learner_key(TEST_TENANT, learner)
    activity = settings.kafka.topics.name("activity")
    producer = create_producer(settings.kafka)
    collector = Collector(settings)
    try:
        first = encode_envelope(_attempt("attempt-1", learner, correct=True))
        producer.send(activity, key=first.key, value=first.value, headers=first.headers)
        producer.flush()

        collector.until(lambda: len(collector.updates("attempt-1")) >= 1, "MasteryUpdated", worker)
        [update] = collector.updates("attempt-1")
        assert update.event_id == output_event_id("attempt-1", "mastery_updated", "fractions.add")
        assert update.learner_id == learner
        assert update.class_id == "class-7a"
        assert update.source.system == "trellis-mastery"
        change = update.mastery_updated
        assert change.p_before == pytest.approx(0.3)
        assert change.p_after == pytest.approx(AFTER_ONE_CORRECT)
        assert change.attempts == 1
        assert change.level == mastery_pb2.MASTERY_LEVEL_PRACTICING
        assert change.model_version == "default-v1"

        read = _read_mastery(worker)
        assert read.learner_id == SIS_ID
        [skill] = read.skills
        assert skill.skill_id == "fractions.add"
        assert skill.p_mastered == pytest.approx(AFTER_ONE_CORRECT)
        assert skill.attempts == 1

        # The same event again, bytes that are no envelope, then a new attempt: all in the
        # learner's partition, so once the new attempt's update is out, the others were handled.
        producer.send(activity, key=first.key, value=first.value, headers=first.headers)
        producer.send(activity, key=key, value=b"\xff\xfenot an envelope")
        second = encode_envelope(_attempt("attempt-2", learner, correct=False))
        producer.send(activity, key=second.key, value=second.value, headers=second.headers)
        producer.flush()

        collector.until(
            lambda: bool(collector.updates("attempt-2")) and bool(collector.letters),
            "the second attempt's update and the dead letter",
            worker,
        )
        # The duplicate changed nothing: any re-sent output is identical, and the next attempt
        # continues from one attempt, not two.
        replays = collector.updates("attempt-1")
        assert {e.event_id for e in replays} == {update.event_id}
        assert all(e.mastery_updated == change for e in replays)
        [after] = collector.updates("attempt-2")
        assert after.mastery_updated.attempts == 2
        assert after.mastery_updated.p_before == pytest.approx(AFTER_ONE_CORRECT)
        assert after.mastery_updated.p_after == pytest.approx(AFTER_CORRECT_THEN_WRONG)

        [letter] = collector.letters
        assert letter.original_value == b"\xff\xfenot an envelope"
        assert letter.original_key == key
        assert letter.source_topic == activity
        assert letter.consumer == "trellis-mastery"
        assert "undecodable" in letter.error

        assert _read_mastery(worker).skills[0].attempts == 2
    finally:
        producer.close()
        collector.consumer.close()

    stop_took = _stop(worker)
    # Faust committed what it processed before leaving: nothing is re-read on restart.
    offsets = _committed_equals_end(settings)
    assert offsets and all(committed == end for committed, end in offsets.values()), offsets

    # A replacement worker on an empty disk rebuilds the table from its changelog before it
    # reports SERVING, and answers as the first one did.
    replacement = start_worker("replacement")
    wait_until_serving(replacement)
    [skill] = _read_mastery(replacement).skills
    assert skill.attempts == 2
    assert skill.p_mastered == pytest.approx(AFTER_CORRECT_THEN_WRONG)
    _stop(replacement)
    print(f"ready after {ready_after:.1f}s, stopped in {stop_took:.1f}s")
