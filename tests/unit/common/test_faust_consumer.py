"""The consumer of every Faust app (`RebalanceSafeConsumer`): what it does around a rebalance.

Its thread (the aiokafka consumer) is replaced by a recorder; the broker-level effect is covered
by tests/integration/mastery/test_two_workers.py."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from faust._cython.streams import StreamIterator
from faust.events import Event
from faust.types import TP, Message

from trellis.common.faust_app import create_app
from trellis.common.faust_consumer import RebalanceSafeConsumer
from trellis.common.settings import Settings

ACTIVITY = "activity"
CHANGELOG = "app-learners-changelog"


@dataclass
class RecordingThread:
    committed: dict[TP, int | None]
    beginnings: dict[TP, int]
    seeks: list[Mapping[TP, int]] = field(default_factory=list)

    async def seek_to_committed(self) -> Mapping[TP, int | None]:
        return self.committed

    async def earliest_offsets(self, *partitions: TP) -> Mapping[TP, int]:
        return {tp: self.beginnings[tp] for tp in partitions}

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        self.seeks.append(dict(partitions))


def consumer() -> RebalanceSafeConsumer:
    app = create_app("consumer-test", Settings(), store="memory://")
    app.topics.acking_topics.add(ACTIVITY)  # what an agent's topic is
    made = app.consumer
    assert isinstance(made, RebalanceSafeConsumer)
    return made


def message(offset: int, *, tracked: bool) -> Message:
    made = Message(ACTIVITY, 0, offset, 0.0, 0, None, b"k", b"v", None)
    made.tracked = tracked
    return made


def commits(subject: RebalanceSafeConsumer, partition: TP) -> list[int]:
    """The offsets Faust's next commits of the partition would send, one per commit."""
    made: list[int] = []
    while (offset := subject._new_offset(partition)) is not None:
        made.append(offset)
    return made


def test_a_record_the_stream_skipped_is_not_acked_for_commit() -> None:
    subject = consumer()
    skipped = message(7, tracked=False)  # skipped by the stream: never processed
    assert not subject.ack(skipped)
    assert not skipped.acked
    processed = message(7, tracked=True)  # the same record read again after the seek
    assert subject.ack(processed)
    assert processed.acked


async def test_a_partition_never_committed_goes_back_to_its_beginning() -> None:
    subject = consumer()
    committed, never, changelog = TP(ACTIVITY, 0), TP(ACTIVITY, 1), TP(CHANGELOG, 1)
    thread = RecordingThread(
        committed={committed: 40, never: None, changelog: None},
        beginnings={never: 3, changelog: 0},
    )
    subject._thread = thread  # type: ignore[assignment]
    assert await subject.seek_to_committed() == thread.committed
    # The committed partition was sought by the thread; table recovery owns changelog positions.
    assert thread.seeks == [{never: 3}]


async def test_records_are_taken_in_order_and_a_lost_one_is_read_again_first() -> None:
    subject = consumer()
    partition = TP(ACTIVITY, 0)
    thread = RecordingThread(committed={partition: 312}, beginnings={})
    subject._thread = thread  # type: ignore[assignment]
    await subject.seek_to_committed()  # 312 is the next record to process

    # 312 never reached the stream: 313 comes first.
    jumped = message(313, tracked=True)
    assert not subject.take_in_order(jumped)
    assert not jumped.tracked  # its ack changes nothing; nobody waits for it
    assert not subject.take_in_order(message(314, tracked=True))  # still missing 312
    await asyncio.sleep(0)  # the seek back runs
    assert thread.seeks == [{partition: 312}]

    # Read again from 312: in order from there.
    assert subject.take_in_order(message(312, tracked=True))
    assert subject.take_in_order(message(313, tracked=True))
    assert not subject.take_in_order(message(313, tracked=True))  # a stale copy: dropped
    assert thread.seeks == [{partition: 312}]  # nothing missing before it: no seek


async def test_a_record_dropped_for_its_order_is_never_counted_for_a_commit() -> None:
    subject = consumer()
    partition = TP(ACTIVITY, 0)
    subject._thread = RecordingThread(committed={partition: 22}, beginnings={})  # type: ignore[assignment]
    await subject.seek_to_committed()
    dropped = message(45, tracked=True)  # the stream tracks a record before its processors
    dropped.refcount = 1
    assert not subject.take_in_order(dropped)
    event = Event(subject.app, b"k", b"v", {}, dropped)
    # The stream acks a skipped record: the compiled iterator inline, the pure-Python one by
    # `Event.ack`.
    StreamIterator(subject.app.topic(ACTIVITY).stream()).after(event, True, None)
    event.ack()
    assert commits(subject, partition) == []


async def test_records_past_a_seek_are_no_gap_to_commit() -> None:
    subject = consumer()
    partition = TP(ACTIVITY, 0)
    thread = RecordingThread(committed={partition: 321}, beginnings={})
    subject._thread = thread  # type: ignore[assignment]
    await subject.seek_to_committed()
    # After a seek back to 321, the fetch under way still hands on 330: Faust's fetch loop
    # would record 322-330 as a gap in the log.
    await subject._add_gap(partition, 322, 330)
    for offset in (321, 322, 323):
        assert subject.ack(message(offset, tracked=True))
    # Faust's commits from here would reach 331, past 324-330 that nobody processed.
    assert commits(subject, partition) == [324]


async def test_a_partition_not_taken_in_order_keeps_faust_gaps() -> None:
    subject = consumer()  # no seek: the order is unknown (a compacted topic may have gaps)
    partition = TP(ACTIVITY, 0)
    await subject._add_gap(partition, 3, 5)  # 2 delivered, then 5
    for offset in (2, 5):
        assert subject.ack(message(offset, tracked=True))
    assert max(commits(subject, partition)) == 6  # the gap counts as processed


def test_any_order_is_taken_before_the_first_seek() -> None:
    subject = consumer()  # agent tests: no group, no seek
    assert subject.take_in_order(message(5, tracked=True))
    assert subject.take_in_order(message(2, tracked=True))


@dataclass
class FakeKafka:
    """aiokafka's consumer, as the consumer's thread holds it: its assignment and pauses."""

    assigned: set[TP]
    paused: set[TP] = field(default_factory=set)

    def assignment(self) -> set[TP]:
        return self.assigned

    def pause(self, *partitions: TP) -> None:
        self.paused.update(partitions)


@dataclass
class PausingThread:
    kafka: FakeKafka

    def assignment(self) -> set[TP]:
        return {TP(*tp) for tp in self.kafka.assigned}

    def _ensure_consumer(self) -> FakeKafka:
        return self.kafka

    async def call_thread(self, fun: Any, *args: Any) -> Any:
        return await fun(*args)


async def test_the_changelogs_of_its_own_tables_are_not_fetched_once_recovered() -> None:
    subject = consumer()
    subject.app.Table("learners", partitions=2)
    changelog = f"{subject.app.conf.id}-learners-changelog"
    own, standby, stream = TP(changelog, 0), TP(changelog, 1), TP(ACTIVITY, 0)
    kafka = FakeKafka(assigned={own, standby, stream})
    subject._thread = PausingThread(kafka)  # type: ignore[assignment]
    subject.app.assignor.assigned_standbys = lambda: {standby}  # type: ignore[method-assign]
    await subject.app.on_rebalance_complete.send()
    # aiokafka itself stops fetching it (Faust's own pause only stops taking its records); the
    # standby, written by another member, and the stream are still fetched.
    assert kafka.paused == {own}
    assert own in subject._paused_partitions
