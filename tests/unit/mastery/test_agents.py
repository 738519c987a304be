"""The activity agent on Faust's test context and the memory:// store (no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import pytest

from tests.conftest import make_test_settings
from trellis.common.codec import encode_envelope, learner_key
from trellis.common.pb.events.v1 import activity_pb2, envelope_pb2
from trellis.mastery.adapters.state_codec import decode_state
from trellis.mastery.stream import agents
from trellis.mastery.stream.agents import BATCH_WITHIN_S
from trellis.mastery.stream.app import MasteryStream, create_stream

KEY = learner_key("district-a", "pseudo-1")


def attempt(event_id: str) -> envelope_pb2.Envelope:
    envelope = envelope_pb2.Envelope(
        event_id=event_id,
        tenant_id="district-a",
        learner_id="pseudo-1",
        item_attempted=activity_pb2.ItemAttempted(skill_ids=["a"], correct=True),
    )
    envelope.occurred_at.FromSeconds(1_790_000_000)
    return envelope


def stored(metadata: object = None) -> asyncio.Future[object]:
    """The broker's acknowledgement of a record, here at once unless a test holds it back
    (`Sent.hold`)."""
    acknowledged: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    acknowledged.set_result(metadata)
    return acknowledged


async def put(agent: Any, value: bytes, key: bytes, headers: Any = None) -> None:
    """Put one event and wait until the agent acked it: its micro-batch was stored."""
    event = await agent.put(value, key=key, headers=headers)
    async with asyncio.timeout(5):
        while not event.message.acked:
            await asyncio.sleep(0.005)


async def put_batch(agent: Any, prefix: str, n: int) -> list[Any]:
    """Put `n` attempts without waiting, so that they make one batch; their events."""
    events = []
    for i in range(n):
        encoded = encode_envelope(attempt(f"{prefix}{i}"))
        events.append(await agent.put(encoded.value, key=encoded.key, wait=False))
    return events


async def until(condition: Callable[[], bool]) -> None:
    """Wait (5 s at most) until `condition()` holds."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


class RecordMetadata(NamedTuple):
    topic: str
    partition: int | None
    offset: int


class Sent:
    def __init__(self) -> None:
        self.mastery: list[envelope_pb2.Envelope] = []
        self.letters: list[envelope_pb2.DeadLetter] = []
        #: Changelog records of the tables: topic, key, value (None: a tombstone).
        self.changelog: list[tuple[str, bytes, bytes | None]] = []
        #: When set, acknowledgements of outputs and letters wait for it.
        self.hold: asyncio.Future[object] | None = None

    def acknowledgement(self) -> asyncio.Future[object]:
        return stored() if self.hold is None else self.hold


class FakeBatch:
    """aiokafka's `BatchBuilder`, as the worker uses it."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(
        self, *, timestamp: object, key: bytes | None, value: bytes | None, headers: object
    ) -> object:
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)

    def close(self) -> None:
        pass


class FakeKafkaProducer:
    """aiokafka's producer under the app: each record of a batch goes to `produce`, which gives
    its acknowledgement; the batch's is the first record's, once all are acknowledged."""

    def __init__(self, produce: Any) -> None:
        self._produce = produce

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        acks = [await self._produce(topic, key, value, partition) for key, value in batch.records]

        async def stored_all() -> RecordMetadata:
            [first, *_] = await asyncio.gather(*acks)
            return RecordMetadata(topic, partition, getattr(first, "offset", 0))

        return asyncio.ensure_future(stored_all())


@pytest.fixture
async def running(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Any, MasteryStream, Sent]]:
    """The agent on its test context; `indirect` parameter: its batch window in seconds."""
    window = mock.patch.object(agents, "BATCH_WITHIN_S", getattr(request, "param", BATCH_WITHIN_S))
    stream = create_stream(make_test_settings("unit"), store="memory://", datadir=tmp_path)
    sent = Sent()

    mastery = stream.topics.mastery_name
    deadletter = stream.topics.deadletter_name
    changelogs = {
        t.changelog_topic.get_topic_name() for t in (stream.tables.learners, stream.tables.erased)
    }

    async def produce(
        topic: str, key: bytes | None, value: bytes | None, partition: int | None, *args: object
    ) -> asyncio.Future[object]:
        if topic in changelogs:
            assert key is not None
            sent.changelog.append((topic, key, value))
            return stored(RecordMetadata(topic, partition, len(sent.changelog) - 1))
        if topic == mastery:
            assert key == KEY
            assert value is not None
            sent.mastery.append(envelope_pb2.Envelope.FromString(value))
        else:
            assert topic == deadletter and value is not None
            sent.letters.append(envelope_pb2.DeadLetter.FromString(value))
        return sent.acknowledgement()

    # Only the neighbour (the producer) is faked; table and agent are Faust's own.
    fake = FakeKafkaProducer(produce)
    with window, mock.patch.object(stream.app.producer, "_ensure_producer", return_value=fake):
        async with stream.agent.test_context() as agent:
            yield agent, stream, sent


async def test_an_attempt_is_applied_and_published(
    running: tuple[Any, MasteryStream, Sent],
) -> None:
    agent, stream, sent = running
    encoded = encode_envelope(attempt("evt-1"))
    await put(agent, encoded.value, encoded.key, encoded.headers)

    [update] = sent.mastery
    assert update.mastery_updated.p_after == pytest.approx(0.6926829268)
    assert stream.store.get(KEY).skills["a"].attempts == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("running", [3_600.0], indirect=True)
async def test_a_batch_goes_once_nothing_more_is_waiting(
    running: tuple[Any, MasteryStream, Sent],
) -> None:
    agent, _, sent = running
    encoded = encode_envelope(attempt("evt-1"))
    # Within `put`'s 5 s, not after the hour's window: nothing else was waiting.
    await put(agent, encoded.value, encoded.key, encoded.headers)
    assert len(sent.mastery) == 1


async def test_a_redelivered_attempt_is_counted_once(
    running: tuple[Any, MasteryStream, Sent],
) -> None:
    agent, stream, sent = running
    encoded = encode_envelope(attempt("evt-1"))
    await put(agent, encoded.value, encoded.key)
    await put(agent, encoded.value, encoded.key)

    assert [e.event_id for e in sent.mastery] == [sent.mastery[0].event_id] * 2
    assert stream.store.get(KEY).skills["a"].attempts == 1  # type: ignore[union-attr]


async def test_bad_events_are_dead_lettered_and_the_agent_goes_on(
    running: tuple[Any, MasteryStream, Sent],
) -> None:
    agent, _, sent = running
    wrong_key = encode_envelope(attempt("evt-2"))
    good = encode_envelope(attempt("evt-3"))
    await put(agent, b"\xff\xfe", KEY)
    await put(agent, wrong_key.value, b"district-a/another-learner")
    await put(agent, good.value, good.key)

    assert [letter.original_value for letter in sent.letters] == [b"\xff\xfe", wrong_key.value]
    assert "undecodable" in sent.letters[0].error
    assert "message key" in sent.letters[1].error
    assert sent.letters[0].consumer == "trellis-mastery"
    assert [e.mastery_updated.cause_event_id for e in sent.mastery] == ["evt-3"]


async def test_an_unexpected_failure_is_dead_lettered_too(
    running: tuple[Any, MasteryStream, Sent],
) -> None:
    agent, stream, sent = running
    encoded = encode_envelope(attempt("evt-4"))
    with mock.patch.object(stream.writer, "record_activity", side_effect=RuntimeError("boom")):
        await put(agent, encoded.value, encoded.key)
    await put(agent, encoded.value, encoded.key)

    assert sent.letters[0].error == "unexpected RuntimeError: boom"
    assert [e.mastery_updated.cause_event_id for e in sent.mastery] == ["evt-4"]


async def test_an_erasure_deletes_the_table_entry_and_is_announced(
    running: tuple[Any, MasteryStream, Sent],
) -> None:
    agent, stream, sent = running
    encoded = encode_envelope(attempt("evt-5"))
    await put(agent, encoded.value, encoded.key)
    request = envelope_pb2.Envelope(
        event_id="erase-1", tenant_id="district-a", learner_id="pseudo-1"
    )
    request.learner_erasure_requested.reason = "parent request"
    request.occurred_at.FromSeconds(1_790_000_060)
    erase = encode_envelope(request)
    written = len(sent.changelog)
    await put(agent, erase.value, erase.key)
    # A tombstone (value None) for the learner's state, and the erased marker (time only).
    learners = stream.tables.learners.changelog_topic.get_topic_name()
    erased = stream.tables.erased.changelog_topic.get_topic_name()
    assert sent.changelog[written:] == [
        (learners, KEY, None),
        (erased, KEY, b"2026-09-21T14:14:20+00:00"),  # 1_790_000_060
    ]
    assert stream.tables.learners.get(KEY) is None
    assert stream.store.erased_at(KEY) is not None
    assert stream.store.erased_at(KEY).timestamp() == 1_790_000_060  # type: ignore[union-attr]
    assert [e.WhichOneof("payload") for e in sent.mastery] == ["mastery_updated", "learner_erased"]
    # The erased learner's old attempt re-read: it stays erased, nothing is sent.
    await put(agent, encoded.value, encoded.key)
    assert stream.tables.learners.get(KEY) is None
    assert len(sent.mastery) == 2


async def test_a_batch_writes_each_learner_once_after_its_outputs_are_stored(
    running: tuple[Any, MasteryStream, Sent],
) -> None:
    agent, stream, sent = running
    sent.hold = asyncio.get_running_loop().create_future()
    events = await put_batch(agent, "evt-b", 3)
    await until(lambda: len(sent.mastery) >= 4)
    # The outputs are out, the broker has not acknowledged them: no state written, no ack.
    await asyncio.sleep(0.05)
    assert stream.tables.learners.get(KEY) is None
    assert sent.changelog == []
    assert not any(e.message.acked for e in events)
    sent.hold.set_result(None)
    await until(lambda: all(e.message.acked for e in events))
    # The third correct answer crosses the threshold: SkillMastered follows its update.
    assert [e.WhichOneof("payload") for e in sent.mastery][-1] == "skill_mastered"
    assert [e.mastery_updated.attempts for e in sent.mastery[:3]] == [1, 2, 3]
    # One changelog record for the learner's three events, and the table holds the same bytes.
    [(_, key, value)] = sent.changelog
    assert key == KEY and value is not None and stream.tables.learners.get(KEY) == value
    assert decode_state(value).skills["a"].attempts == 3


async def test_a_batch_s_outputs_leave_while_it_is_applied(
    running: tuple[Any, MasteryStream, Sent],
) -> None:
    agent, _, sent = running
    sent_before_each_apply: list[int] = []
    apply = agents._apply

    def spy(*args: Any) -> Any:
        sent_before_each_apply.append(len(sent.mastery))
        return apply(*args)

    with mock.patch.object(agents, "OUTPUT_EVERY_S", 0.0), mock.patch.object(agents, "_apply", spy):
        events = await put_batch(agent, "evt-c", 3)
        await until(lambda: all(e.message.acked for e in events))
    # One batch (one state write), and each event's output was out before the next was applied.
    assert len(sent.changelog) == 1
    assert sent_before_each_apply == [0, 1, 2]


async def test_outputs_not_stored_are_all_sent_again_before_the_states(
    running: tuple[Any, MasteryStream, Sent],
) -> None:
    agent, _, sent = running
    sent.hold = asyncio.get_running_loop().create_future()
    with (
        mock.patch.object(agents, "OUTPUT_EVERY_S", 0.0),
        mock.patch.object(agents, "RESEND_PAUSE_S", 0.01),
    ):
        events = await put_batch(agent, "evt-f", 3)
        await until(lambda: len(sent.mastery) >= 4)
        assert sent.changelog == []
        refused, sent.hold = sent.hold, None
        refused.set_exception(RuntimeError("the broker did not store them"))
        await until(lambda: all(e.message.acked for e in events))
    first, again = sent.mastery[:4], sent.mastery[4:]
    assert [e.event_id for e in again] == [e.event_id for e in first]
    assert len(sent.changelog) == 1
