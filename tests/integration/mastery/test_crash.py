"""Crash test: kill -9 the mastery worker at seeded points mid-stream, restart it, and check that
nothing acknowledged is lost or counted twice (DESIGN.md §6; issue 6's acceptance).

A seeded stream of attempts (30 learners, multi-skill items, wrong answers with error tags, days
between some attempts so that reviews fall due, and some events sent twice) is produced to the
real broker at a steady pace while the worker runs as a process (`python -m trellis.mastery
worker`). When the mastery topic shows that a seeded number of attempts has been processed, the
worker gets SIGKILL and a new one starts, on the killed worker's data dir (a pod restarted on
its volume) or, once, on an empty one (rescheduled elsewhere), while the producer goes on. The
last kill comes as soon as the main part of the stream is processed; then a tail of attempts of
half the learners is sent, which the worker finishes before it stops cleanly. Then:
- the live state (the table changelogs) equals a clean replay of the activity log
  (`trellis.mastery.replay`, every field, nothing ignored);
- each learner's evidence count per skill equals the number of distinct acknowledged attempts;
- every output id the clean replay produces is on the mastery topic (copies allowed, none lost).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from kafka import TopicPartition

from tests.conftest import TEST_TENANT
from tests.integration.mastery.envelopes import learner_event
from tests.integration.mastery.roster import publish_roster
from tests.integration.mastery.test_worker import _committed_equals_end, _stop
from tests.integration.mastery.workers import TOKEN, Worker, worker_env
from trellis.common.codec import decode_envelope, encode_envelope, learner_key
from trellis.common.kafka import create_consumer, create_producer
from trellis.common.pb.events.v1 import activity_pb2, envelope_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2 as api_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2_grpc
from trellis.common.settings import Settings
from trellis.mastery.adapters.log_reader import read_live_state, replay_log
from trellis.mastery.domain import LearnerState
from trellis.mastery.replay import compare

SEED = 20261201
LEARNERS = 30
SKILLS = [f"skill-{n}" for n in range(6)]
#: Attempts of every learner, then a tail of attempts of the first half of the learners only.
ATTEMPTS, TAIL_ATTEMPTS = 2_250, 150
#: Share of attempts sent a second time, later in the stream (a client retrying a batch).
RESENT = 0.05
#: The producer's pace: a chunk every interval, so the stream outlasts the restarts.
CHUNK, CHUNK_INTERVAL_S = 40, 0.2
KILLS = 3
#: Which restarts get an empty data dir (a pod rescheduled on another node: all state comes from
#: the changelog); the others reopen the killed worker's RocksDB (a pod restarted on its volume).
FRESH_DISK_RESTARTS = {2}
#: Longest wait for one kill point, and for the end of the stream after the last restart.
POINT_TIMEOUT_S = 45.0
FINISH_TIMEOUT_S = 60.0
RELEASE_TIMEOUT_S = POINT_TIMEOUT_S * KILLS + 30
START = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Attempt:
    envelope: envelope_pb2.Envelope
    skills: tuple[str, ...]


def seeded_stream(rng: random.Random) -> tuple[list[Attempt], list[Attempt]]:
    """The attempts in send order, re-sent copies included (same id, same bytes): the main part,
    and the tail, in which the second half of the learners has no attempts."""
    learners = [f"learner-{n:02d}" for n in range(LEARNERS)]
    clock = dict.fromkeys(learners, START)
    ability = {learner: rng.uniform(0.3, 0.9) for learner in learners}
    stream: list[Attempt] = []
    for n in range(ATTEMPTS + TAIL_ATTEMPTS):
        learner = rng.choice(learners if n < ATTEMPTS else learners[: LEARNERS // 2])
        # Minutes apart mostly; now and then days, so that mastered skills fall due for review.
        gap = timedelta(days=rng.uniform(2, 20)) if rng.random() < 0.03 else timedelta(minutes=2)
        clock[learner] += gap
        skills = tuple(rng.sample(SKILLS, rng.choice((1, 1, 2))))
        correct = rng.random() < ability[learner]
        stream.append(Attempt(_attempt(f"crash-{n}", learner, skills, correct, clock[learner],
                                       "" if correct else rng.choice(("sign", "carry", ""))),
                              skills))  # fmt: skip
        if len(stream) > 1 and rng.random() < RESENT:
            stream.append(stream[rng.randrange(max(0, len(stream) - 50), len(stream))])
        if n == ATTEMPTS - 1:
            main = stream
            stream = []
    return main, stream


def _attempt(
    event_id: str,
    learner: str,
    skills: tuple[str, ...],
    correct: bool,
    when: datetime,
    error_tag: str,
) -> envelope_pb2.Envelope:
    return learner_event(
        event_id,
        learner,
        when,
        item_attempted=activity_pb2.ItemAttempted(
            item_id=f"item-{'-'.join(skills)}",
            skill_ids=skills,
            correct=correct,
            attempt_number=1,
            error_tag=error_tag,
        ),
    )


class PacedProducer(threading.Thread):
    """Sends the main part in chunks at a steady pace, then the tail once `release` is set; keeps
    the events Kafka acknowledged."""

    def __init__(self, settings: Settings, main: list[Attempt], tail: list[Attempt]) -> None:
        super().__init__(name="crash-producer", daemon=True)
        self._settings = settings
        self._parts = (main, tail)
        self.release = threading.Event()
        self.acknowledged: list[Attempt] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        producer = create_producer(self._settings.kafka)
        topic = self._settings.kafka.topics.name("activity")
        timeout = self._settings.kafka.delivery_timeout_ms / 1000
        try:
            main, tail = self._parts
            for part in (main, tail):
                if part is tail and not self.release.wait(RELEASE_TIMEOUT_S):
                    raise TimeoutError("the tail was never released")
                for start in range(0, len(part), CHUNK):
                    chunk = part[start : start + CHUNK]
                    futures = []
                    for attempt in chunk:
                        encoded = encode_envelope(attempt.envelope)
                        futures.append(producer.send(topic, key=encoded.key, value=encoded.value,
                                                     headers=encoded.headers))  # fmt: skip
                    producer.flush()
                    for attempt, future in zip(chunk, futures, strict=True):
                        future.get(timeout=timeout)  # raises unless Kafka stored it
                        self.acknowledged.append(attempt)
                    time.sleep(CHUNK_INTERVAL_S)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            producer.close()


@dataclass
class MasteryTopic:
    """Follows the mastery topic from the beginning: every output id, and the attempts that
    have a `MasteryUpdated` (processed at least once)."""

    settings: Settings
    output_ids: list[str] = field(default_factory=list)
    processed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        topics = self.settings.kafka.topics
        self._consumer = create_consumer(self.settings.kafka, None)
        self._consumer.assign(
            [TopicPartition(topics.name("mastery"), p) for p in range(topics.partitions)]
        )
        self._consumer.seek_to_beginning()

    def poll(self) -> None:
        for records in self._consumer.poll(timeout_ms=200).values():
            for record in records:
                envelope = decode_envelope(record.value, record.headers)
                self.output_ids.append(envelope.event_id)
                if envelope.WhichOneof("payload") == "mastery_updated":
                    self.processed.add(envelope.mastery_updated.cause_event_id)

    def drain(self) -> None:
        """Reads on to the end offsets of now."""
        ends = self._consumer.end_offsets(list(self._consumer.assignment()))
        deadline = time.monotonic() + 30
        while any(self._consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, "mastery topic not read to its end in 30 s"
            self.poll()

    def until(self, done: Callable[[], bool], what: str, worker: Worker, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}:\n{worker.output()}")
            if worker.process.poll() is not None:
                pytest.fail(f"worker exited while waiting for {what}:\n{worker.output()}")
            self.poll()

    def close(self) -> None:
        self._consumer.close()


def _served_attempts(worker: Worker) -> dict[tuple[bytes, str], int]:
    """Attempts per (learner key, skill) as the worker's read API answers them (GetClassMastery:
    every learner the roster enrols in the class, from the worker's own store)."""
    with grpc.insecure_channel(f"127.0.0.1:{worker.port}") as channel:
        reply = mastery_pb2_grpc.MasteryServiceStub(channel).GetClassMastery(
            api_pb2.GetClassMasteryRequest(tenant_id=TEST_TENANT, class_id="class-7a"),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
            timeout=10.0,
        )
    return {
        (learner_key(TEST_TENANT, learner.learner_id), skill.skill_id): skill.attempts
        for learner in reply.learners
        for skill in learner.skills
    }


def _attempts(states: Mapping[bytes, LearnerState]) -> dict[tuple[bytes, str], int]:
    return {
        (key, skill_id): skill.attempts
        for key, state in states.items()
        for skill_id, skill in state.skills.items()
    }


class Throttled:
    """A slow check run at most once per `every_s`; False in between."""

    def __init__(self, check: Callable[[], bool], every_s: float) -> None:
        self._check, self._every_s, self._last = check, every_s, 0.0

    def __call__(self) -> bool:
        if time.monotonic() - self._last < self._every_s:
            return False
        self._last = time.monotonic()
        return self._check()


def _committed_to_end(settings: Settings) -> bool:
    offsets = _committed_equals_end(settings)
    return bool(offsets) and all(committed == end for committed, end in offsets.values())


def test_kill_9_at_seeded_points_loses_nothing_and_counts_nothing_twice(
    settings: Settings, start_worker: Callable[[str, str], Worker]
) -> None:
    rng = random.Random(SEED)
    main, tail = seeded_stream(rng)
    stream = main + tail
    attempt_ids = {a.envelope.event_id for a in stream}
    main_ids = {a.envelope.event_id for a in main}
    # Kill points: numbers of distinct attempts processed, spread over the main part; the last
    # kill comes as soon as the main part is processed, before the tail is sent. The second half
    # of the learners has no attempt in the tail, so a state of theirs written just before that
    # kill is their last: a write that the changelog missed would not be hidden by a later one.
    points = sorted(rng.sample(range(len(main_ids) // 10, len(main_ids) * 8 // 10), KILLS - 1))
    points.append(len(main_ids))
    began = time.monotonic()
    topic = MasteryTopic(settings)
    producer = PacedProducer(settings, main, tail)
    # Every learner in class-7a: the class read lists them all (_served_attempts).
    publish_roster(settings, {"class-7a": sorted({a.envelope.learner_id for a in stream})})
    disk = "disk-0"
    worker = start_worker("worker-0", disk)
    producer.start()
    kills: list[tuple[int, int, int]] = []  # (point, processed at the kill, acknowledged)
    try:
        for n, point in enumerate(points, start=1):
            topic.until(lambda p=point: len(topic.processed & main_ids) >= p,
                        f"kill point {point}", worker, POINT_TIMEOUT_S)  # fmt: skip
            worker.process.kill()
            worker.process.wait(timeout=10)
            kills.append((point, len(topic.processed), len(producer.acknowledged)))
            disk = f"disk-{n}" if n in FRESH_DISK_RESTARTS else disk
            worker = start_worker(f"worker-{n}", disk)
        producer.release.set()
        producer.join(timeout=FINISH_TIMEOUT_S)
        assert producer.error is None, f"producing failed: {producer.error!r}"
        assert not producer.is_alive(), "the producer did not finish"
        # Done when every attempt has its update, or when the worker committed the whole log
        # (it flushes its outputs before it commits): then anything missing is lost.
        caught_up = Throttled(lambda: _committed_to_end(settings), every_s=1.0)
        topic.until(lambda: topic.processed >= attempt_ids or caught_up(), "the end of the log",
                    worker, FINISH_TIMEOUT_S)  # fmt: skip
        served = _served_attempts(worker)  # what the worker answers, from its own store
        _stop(worker)  # a clean stop: the changelog holds everything the worker applied
        processing_s = time.monotonic() - began

        # Every kill fell mid-stream: attempts were still to come.
        assert all(processed < len(attempt_ids) for _, processed, _ in kills), kills

        rebuilt = replay_log(settings)
        live = read_live_state(settings)
        differences = compare(live.states, rebuilt.states, live.erased, rebuilt.erased)
        # Evidence: each acknowledged attempt counted once, whatever was re-read or re-sent.
        ids_per_skill: dict[tuple[bytes, str], set[str]] = defaultdict(set)
        for attempt in producer.acknowledged:
            key = learner_key(TEST_TENANT, attempt.envelope.learner_id)
            for skill in attempt.skills:
                ids_per_skill[(key, skill)].add(attempt.envelope.event_id)
        expected = {k: len(ids) for k, ids in ids_per_skill.items()}

        differing = sorted({d.learner for d in differences})
        assert not differences, (
            f"the changelogs' state != clean replay for {len(differing)} learners {differing}; "
            f"the worker's read API counted every attempt once: {served == expected}\n"
            + "\n".join(d.describe() for d in differences[:12])
        )
        assert _attempts(live.states) == expected
        assert served == expected

        # Outputs: every id of a clean replay is on the topic (copies allowed, none lost).
        topic.drain()
        on_topic = set(topic.output_ids)
        missing = rebuilt.output_ids - on_topic
        assert not missing, f"{len(missing)} outputs lost, e.g. {sorted(missing)[:5]}"
        assert on_topic <= rebuilt.output_ids, "outputs on the topic that a replay does not make"
        # The command gives the same verdict.
        command = subprocess.run(
            [sys.executable, "-m", "trellis.mastery", "replay", "--json"],
            env=worker_env(settings, Path("unused"), 0, 0),
            capture_output=True,
            timeout=60,
        )
        assert command.returncode == 0, command.stderr.decode(errors="replace")[-5_000:]
        verdict = json.loads(command.stdout)
        assert verdict["equal"] and verdict["events"] == len(stream), verdict
        print(
            f"kills (point, processed, acknowledged): {kills}; {len(stream)} sends, "
            f"{len(attempt_ids)} attempts, {len(rebuilt.output_ids)} output ids, "
            f"{len(topic.output_ids) - len(on_topic)} copies on the topic; "
            f"stream and restarts took {processing_s:.1f}s"
        )
    finally:
        topic.close()
        producer.join(timeout=5)
