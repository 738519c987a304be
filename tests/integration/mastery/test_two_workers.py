"""Two mastery workers on the real broker, with rebalances forced mid-test (a second worker
joins, then the first is killed with SIGKILL) while activity keeps arriving: every read answer,
from either worker, is either UNAVAILABLE (retryable) or exactly the state that the activity log
gives up to the offsets the answer says it reflects.

The expected states come from the log itself: the events this test produced, with the partition
and offset the broker gave each, folded by the same domain code over an in-memory store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from tests.conftest import TEST_TENANT
from tests.integration.mastery.roster import publish_roster
from tests.integration.mastery.workers import TOKEN, Worker, wait_until_serving
from trellis.common.codec import encode_envelope, learner_key
from trellis.common.kafka import create_producer
from trellis.common.pb.events.v1 import activity_pb2, envelope_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2 as api_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Settings
from trellis.mastery.adapters.memory_store import InMemoryLearnerStore
from trellis.mastery.adapters.peers import FORWARDED_KEY
from trellis.mastery.domain import SkillState
from trellis.mastery.service import MasteryService

LEARNERS = [f"sis-{n}" for n in range(8)]
CLASSES = ["class-7a", "class-7b"]
SKILLS = [["fractions.add"], ["fractions.add", "fractions.compare"], ["decimals.order"]]
AUTH = (("authorization", f"Bearer {TOKEN}"),)
SETTLE_TIMEOUT_S = 60.0


@dataclass
class Log:
    """The activity this test produced, as the broker placed it."""

    settings: Settings
    pseudonyms: Pseudonymizer
    events: list[tuple[int, int, bytes, envelope_pb2.Envelope]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.topic = self.settings.kafka.topics.name("activity")
        self.producer = create_producer(self.settings.kafka)

    def key(self, sis_id: str) -> bytes:
        return learner_key(TEST_TENANT, self.pseudonyms.pseudonymize(TEST_TENANT, sis_id))

    def publish_roster(self) -> None:
        """Every learner enrolled in their class (the class their events name)."""
        members: dict[str, list[str]] = {}
        for n, sis_id in enumerate(LEARNERS):
            pseudonym = self.pseudonyms.pseudonymize(TEST_TENANT, sis_id)
            members.setdefault(CLASSES[n % 2], []).append(pseudonym)
        publish_roster(self.settings, members)

    def send(self, n: int) -> None:
        """The n-th event: learners, classes, skills and answers in a fixed rotation."""
        sis_id = LEARNERS[n % len(LEARNERS)]
        when = datetime(2026, 9, 1, 8, 0, tzinfo=UTC).timestamp() + n
        envelope = envelope_pb2.Envelope(
            event_id=f"evt-{n}",
            tenant_id=TEST_TENANT,
            school_id="school-1",
            class_id=CLASSES[LEARNERS.index(sis_id) % 2],
            learner_id=self.pseudonyms.pseudonymize(TEST_TENANT, sis_id),
            pseudonym_key_version=1,
            source=envelope_pb2.Source(system="practice-app"),
            item_attempted=activity_pb2.ItemAttempted(
                item_id=f"item-{n % 5}", skill_ids=SKILLS[n % 3], correct=n % 4 != 1
            ),
        )
        envelope.occurred_at.FromSeconds(int(when))
        envelope.ingested_at.FromSeconds(int(when))
        encoded = encode_envelope(envelope)
        sent = self.producer.send(
            self.topic, key=encoded.key, value=encoded.value, headers=encoded.headers
        ).get(timeout=10)
        self.events.append((sent.partition, sent.offset, encoded.key, envelope))

    def last_offsets(self) -> dict[int, int]:
        last: dict[int, int] = {}
        for partition, offset, _, _ in self.events:
            last[partition] = max(offset, last.get(partition, -1))
        return last

    def state(self, key: bytes, partition: int, upto: int) -> dict[str, SkillState]:
        """The learner's skills after their events at offsets <= `upto` of their partition."""
        service = MasteryService(InMemoryLearnerStore())
        for p, offset, k, envelope in self.events:
            if k == key and p == partition and offset <= upto:
                service.record_activity(k, envelope)
        learner = key.split(b"/", 1)[1].decode()
        return service.mastery_of(TEST_TENANT, learner)


def _same(answer: api_pb2.LearnerMastery, expected: dict[str, SkillState], context: str) -> None:
    got = {s.skill_id: (s.attempts, s.p_mastered) for s in answer.skills}
    want = {skill_id: (s.attempts, s.effective) for skill_id, s in expected.items()}
    assert set(got) == set(want), (context, got, want)
    for skill_id, (attempts, p_mastered) in want.items():
        assert got[skill_id][0] == attempts, (context, skill_id, got, want)
        assert got[skill_id][1] == pytest.approx(p_mastered, abs=1e-12), (context, skill_id)


@dataclass
class Reader:
    """Reads everything from one worker and checks each answer against the log."""

    worker: Worker
    log: Log
    ok: int = 0
    unavailable: int = 0

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.worker.port}")
        self.stub = mastery_pb2_grpc.MasteryServiceStub(self.channel)

    def _call(self, method: str, request: Any, extra: tuple[tuple[str, str], ...] = ()) -> Any:
        """The answer, or None for UNAVAILABLE; any other failure fails the test."""
        try:
            answer = getattr(self.stub, method)(request, metadata=AUTH + extra, timeout=5.0)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, (exc.code(), exc.details())
            if not extra:
                self.unavailable += 1
            return None
        if not extra:
            self.ok += 1
        return answer

    def learner(self, sis_id: str) -> dict[int, int] | None:
        """Reads and checks one learner; the offsets the answer reflects (None: unavailable)."""
        request = api_pb2.GetLearnerMasteryRequest(tenant_id=TEST_TENANT, learner_id=sis_id)
        answer = self._call("GetLearnerMastery", request)
        if answer is None:
            return None
        key = self.log.key(sis_id)
        [reflects] = answer.reflects
        assert reflects.topic == self.log.topic
        context = f"{self.worker.log.stem}: {sis_id} at {reflects.partition}/{reflects.offset}"
        _same(answer, self.log.state(key, reflects.partition, reflects.offset), context)
        return {reflects.partition: reflects.offset}

    def whole_class(self, class_id: str) -> dict[int, int] | None:
        request = api_pb2.GetClassMasteryRequest(tenant_id=TEST_TENANT, class_id=class_id)
        answer = self._call("GetClassMastery", request)
        if answer is None:
            return None
        reflects = {r.partition: r.offset for r in answer.reflects}
        assert sorted(reflects) == list(range(self.log.settings.kafka.topics.partitions))
        expected = {}
        for sis_id in LEARNERS:
            if CLASSES[LEARNERS.index(sis_id) % 2] != class_id:
                continue
            key = self.log.key(sis_id)
            partition = next(p for p, _, k, _ in self.log.events if k == key)
            state = self.log.state(key, partition, reflects[partition])
            if state:  # a learner appears once their first event is applied
                expected[key.split(b"/", 1)[1].decode()] = state
        assert [learner.learner_id for learner in answer.learners] == sorted(expected)
        for learner in answer.learners:
            context = f"{self.worker.log.stem}: {class_id} at {reflects}"
            _same(learner, expected[learner.learner_id], context)
        return reflects

    def everything(self) -> dict[int, int] | None:
        """Every learner and both classes; the offsets all answers reflect if they agree."""
        seen: list[dict[int, int] | None] = [self.learner(s) for s in LEARNERS]
        seen += [self.whole_class(c) for c in CLASSES]
        if any(s is None for s in seen):
            return None
        merged: dict[int, int] = {}
        for reflects in seen:
            assert reflects is not None
            for partition, offset in reflects.items():
                merged[partition] = min(offset, merged.get(partition, offset))
        return merged

    def owns(self, sis_id: str) -> bool:
        """Whether this worker answers for the learner itself (a call marked as forwarded is
        never forwarded again: a worker that does not hold the learner says UNAVAILABLE)."""
        request = api_pb2.GetLearnerMasteryRequest(tenant_id=TEST_TENANT, learner_id=sis_id)
        return self._call("GetLearnerMastery", request, ((FORWARDED_KEY, "1"),)) is not None

    def close(self) -> None:
        self.channel.close()


def _until(done: Callable[[], bool], what: str, workers: list[Worker]) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while not done():
        if time.monotonic() > deadline:
            logs = "\n".join(w.output()[-4000:] for w in workers)
            pytest.fail(f"timed out waiting for {what}:\n{logs}")
        time.sleep(0.2)


def test_every_read_is_right_whichever_worker_answers_through_rebalances(
    settings: Settings,
    start_worker: Callable[[str], Worker],
) -> None:
    log = Log(settings, Pseudonymizer(settings.pseudonym.all_keys()))
    log.publish_roster()
    first = start_worker("first")
    wait_until_serving(first)
    sent = 0
    for _ in range(40):
        log.send(sent)
        sent += 1
    reader_a = Reader(first, log)
    _until(lambda: reader_a.everything() == log.last_offsets(), "the first worker", [first])

    # A second worker joins: the group rebalances while activity keeps coming and both are read.
    joining = time.monotonic()
    second = start_worker("second")
    reader_b = Reader(second, log)
    readers = [reader_a, reader_b]
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        log.send(sent)
        sent += 1
        answers = [reader.everything() for reader in readers]
        if all(a is not None for a in answers) and all(
            reader_a.owns(s) != reader_b.owns(s) for s in LEARNERS
        ):
            break  # both answer everything, and each holds some learners: reads are routed
        assert time.monotonic() < deadline, "\n".join(w.output()[-4000:] for w in (first, second))
    joined = time.monotonic() - joining
    assert {reader_a.owns(s) for s in LEARNERS} == {True, False}
    _until(
        lambda: reader_a.everything() == reader_b.everything() == log.last_offsets(),
        "both workers to reflect all activity",
        [first, second],
    )

    # The first worker crashes (kill -9: no commit, no goodbye): once the group notices, its
    # partitions move to the second, with whatever it had written but not committed.
    first.process.kill()
    first.process.wait(timeout=10)
    killed = time.monotonic()
    deadline = killed + SETTLE_TIMEOUT_S
    while not all(reader_b.owns(s) for s in LEARNERS):
        assert time.monotonic() < deadline, second.output()[-4000:]
        log.send(sent)
        sent += 1
        reader_b.everything()
    took_over = time.monotonic() - killed
    _until(
        lambda: reader_b.everything() == log.last_offsets(),
        "the second worker to reflect everything",
        [second],
    )
    for reader in readers:
        reader.close()
    print(
        f"both workers serve {joined:.1f}s after the second started; the second holds every "
        f"partition {took_over:.1f}s after the first was killed; "
        f"{sent} events; first worker: {reader_a.ok} answers checked, {reader_a.unavailable} "
        f"unavailable; second: {reader_b.ok} checked, {reader_b.unavailable} unavailable"
    )
