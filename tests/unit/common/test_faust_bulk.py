"""Records in lists (`BulkRecords`, `RebalanceSafeConsumer.take_in_bulk`): what Faust's stream did
per record, done per list.

The consumer's thread (aiokafka) is replaced by recorders; the broker-level effect is covered by
tests/integration/mastery (two workers with a rebalance, kill -9 at seeded points)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.events import Event
from faust.sensors import Sensor
from faust.types import TP, Message
from faust.types.tuples import ConsumerMessage

from tests.unit.common.test_faust_consumer import (
    ACTIVITY,
    RecordingThread,
    commits,
    consumer,
)
from trellis.common.faust_bulk import BulkRecords
from trellis.common.faust_consumer import RebalanceSafeConsumer

OTHER = "other"
PARTITION = TP(ACTIVITY, 0)


def bulk(subject: RebalanceSafeConsumer, *, high: int = 100, low: int = 50) -> BulkRecords:
    records = subject.take_in_bulk(ACTIVITY, high=high, low=low)
    subject.app.flow_control.resume()  # as after a rebalance
    return records


def fetched(offsets: range, partition: int = 0, *, generation: int | None = None) -> list[Message]:
    made = []
    for offset in offsets:
        # What the consumer makes of a fetched record: untracked until a stream takes it.
        message = ConsumerMessage(
            ACTIVITY, partition, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation
        )
        made.append(message)
    return made


def record(topic: str, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, 0, offset, 0, 0, b"k", b"v", None, 1, 1, ())


def events(subject: RebalanceSafeConsumer, messages: list[Message]) -> list[Event]:
    return [Event(subject.app, m.key, m.value, {}, m) for m in messages]


def test_records_are_taken_in_the_order_fetched_and_tracked_until_acked() -> None:
    subject = consumer()
    records = bulk(subject)
    generation = subject.app.consumer_generation_id
    records.add(PARTITION, fetched(range(10, 15), generation=generation))
    taken = records.take(3)
    assert [m.offset for m in taken] == [10, 11, 12]
    assert all(m.tracked for m in taken)
    assert set(taken) <= subject._unacked_messages  # a rebalance waits for them
    assert len(records) == 2
    assert commits(subject, PARTITION) == []  # nothing acked: nothing to commit
    records.ack(events(subject, taken))
    assert not subject._unacked_messages
    assert commits(subject, PARTITION) == [13]


def test_records_from_an_older_generation_or_a_stopped_flow_are_dropped() -> None:
    subject = consumer()
    records = bulk(subject)
    generation = subject.app.consumer_generation_id
    stale = fetched(range(0, 3), generation=generation - 1)  # fetched before a rebalance
    records.add(PARTITION, stale)
    assert records.take(10) == []
    assert not any(m.tracked for m in stale)  # never counted for a commit
    subject.app.flow_control.suspend()  # a rebalance began
    records.add(PARTITION, fetched(range(3, 5), generation=generation))
    assert records.take(10) == []
    assert not subject._unacked_messages


async def test_records_out_of_order_are_dropped_and_read_again_first() -> None:
    subject = consumer()
    thread = RecordingThread(committed={PARTITION: 20}, beginnings={})
    subject._thread = thread  # type: ignore[assignment]
    await subject.seek_to_committed()
    records = bulk(subject)
    generation = subject.app.consumer_generation_id
    records.add(PARTITION, fetched(range(22, 25), generation=generation))  # 20 and 21 lost
    assert records.take(10) == []
    await asyncio.sleep(0)  # the seek back runs
    records.add(PARTITION, fetched(range(20, 23), generation=generation))  # read again
    assert [m.offset for m in records.take(10)] == [20, 21, 22]
    assert thread.seeks == [{PARTITION: 20}]


async def test_fetching_waits_past_high_until_taken_down_to_low() -> None:
    subject = consumer()
    records = bulk(subject, high=10, low=4)
    subject._active_partitions = {PARTITION}
    fetches: list[object] = []

    async def getmany(active_partitions: Any, timeout: float) -> dict[TopicPartition, list[Any]]:
        fetches.append(active_partitions)
        return {}

    subject._getmany = getmany  # type: ignore[method-assign]
    generation = subject.app.consumer_generation_id
    records.add(PARTITION, fetched(range(0, 12), generation=generation))
    fetch = asyncio.ensure_future(subject._wait_next_records(1.0))
    await asyncio.sleep(0.01)
    records.take(7)  # 5 left: still above low
    await asyncio.sleep(0.01)
    assert fetches == [] and not fetch.done()
    records.take(1)
    await fetch
    assert fetches == [{PARTITION}]  # partitions are never paused for it


def test_the_last_record_acked_per_partition_is_told_to_the_sensors() -> None:
    subject = consumer()
    seen: list[tuple[TP, int]] = []

    class Applied(Sensor):
        def on_stream_event_out(self, tp: TP, offset: int, *args: Any, **kwargs: Any) -> None:
            seen.append((tp, offset))

    subject.app.sensors.add(Applied())
    records = bulk(subject)
    generation = subject.app.consumer_generation_id
    records.add(PARTITION, fetched(range(0, 3), generation=generation))
    records.add(TP(ACTIVITY, 1), fetched(range(7, 9), 1, generation=generation))
    records.ack(events(subject, records.take(10)))
    assert sorted(seen) == [(PARTITION, 2), (TP(ACTIVITY, 1), 8)]


async def test_the_consumer_hands_a_registered_topic_its_records_in_lists() -> None:
    subject = consumer()
    records = bulk(subject)
    ours, theirs = TopicPartition(ACTIVITY, 0), TopicPartition(OTHER, 0)
    subject._active_partitions = {TP(ACTIVITY, 0), TP(OTHER, 0)}

    async def getmany(
        active_partitions: Any, timeout: float
    ) -> Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        return {ours: [record(ACTIVITY, 5), record(ACTIVITY, 6)], theirs: [record(OTHER, 1)]}

    subject._getmany = getmany  # type: ignore[method-assign]
    left, _ = await subject._wait_next_records(1.0)
    assert list(left) == [theirs]  # the rest goes on through Faust's fetch loop
    assert [m.offset for m in records.take(10)] == [5, 6]
