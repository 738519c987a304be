"""Faust's Kafka consumer, with the holes in its rebalance and seek handling closed.

Around a rebalance Faust's consumer fetches records it does not deliver (a paused partition, a
flow stopped for table recovery) or delivers records that its stream skips (fetched in an older
generation, or while the flow is stopped), and counts on the seek to each partition's committed
offset that ends every recovery to read them again. Two ways this fails, losing activity events
for good (no mastery outputs, missing from the learner's state): found by
tests/integration/mastery/test_two_workers.py (4 failures in 36 runs; 0 in 40 with this class),
traced in Faust's consumer:

- A partition that no member ever committed has no committed offset to seek to: aiokafka's
  `seek_to_committed` leaves it where the dropped fetch left it, past records nobody processed.
  Here such a partition goes back to its beginning, the position `auto_offset_reset="earliest"`
  gave it at first (what was processed before is processed again: at-least-once, the dedup by
  event id makes it a no-op).
- A record the stream skipped is acked so that lag does not grow (`faust/streams.py`,
  `_py_aiter`), so the next commit can cover it and the seek go past it. Here the ack of a
  record the stream never tracked (tracking comes after the check that skips) changes nothing.
  (Only Faust's pure-Python stream iterator acks those; the compiled one, which Faust prefers
  when it is built, as here, does not.)

A third way remains in Faust's consumer (a record it takes while that final seek is under way
never reaches the stream), so the agent also checks the order itself (`take_in_order`): each
seek to the committed offsets sets, per stream partition, the offset the next record must have;
a record past it means records were lost on the way, so the partition is sought back to the
missing one and the records after it are dropped (untracked and marked acked, so that neither of
Faust's stream iterators counts them for a commit) until it comes.
A record that never comes (a log truncated under the group) stalls the partition with a warning
on each try rather than skipping it.

And a seek does not stop the fetch under way: Faust's fetch loop goes on handing out that fetch's
records, from past the offset just sought. It takes the jump for a gap in the log (offsets that a
compacted or transactional topic lacks) and its next commit after the gap's start counts the
whole gap as processed, so a read's offsets ran ahead of its state and a rebalance then would
lose the gap's records. A partition taken in order has no such gaps (the activity topic is
neither compacted nor transactional), so none is recorded for it.

Once a rebalance's table recovery is over, aiokafka stops fetching the changelog partitions of
this member's own tables. Faust's "pause" only stops taking their records from aiokafka's buffer,
so aiokafka went on fetching them, and a partition without traffic (the erasure table's) is in
every fetch request built while the activity partitions still have records waiting to be taken:
the broker held such a request for Faust's fixed 1.5 s `fetch_max_wait_ms`, and the activity
records came in bursts 1 to 1.5 s apart at 5,000 events/s (docs/mastery-performance.md). The next
rebalance's assignment fetches everything again (aiokafka starts each assignment unpaused), so
table recovery reads what it must.

It can also hand a topic's records to their processor in lists, around Faust's per-record path
(`take_in_bulk`, `trellis.common.faust_bulk`), with the same rules applied per list.

Upstream: faust-streaming/faust#596 reports a neighbouring race in the same window; #606 (open;
fix under review in #707) commits past a record still in flight through the same bookkeeping;
#488 made the compiled iterator ack the records a processor skips.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

from aiokafka.structs import TopicPartition
from faust.transport.drivers.aiokafka import Consumer, Transport
from faust.types import TP, Message

from trellis.common.faust_bulk import BulkRecords
from trellis.common.logging import get_logger

log = get_logger("trellis.faust.consumer")


class RebalanceSafeConsumer(Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per stream partition: the offset the next record must have (unknown: any).
        self._expected: dict[TP, int] = {}
        self._rewinding: dict[TP, asyncio.Future[None]] = {}
        # Topic -> where its records go instead of its stream (`take_in_bulk`).
        self._bulk: dict[str, BulkRecords] = {}
        self.app.on_rebalance_complete.connect(self._pause_own_changelogs)

    async def _pause_own_changelogs(self, *_: Any, **__: Any) -> None:
        """Stop fetching the changelogs of the tables this member writes (their standbys, which
        other members write, are still followed); run when table recovery is over."""
        changelogs = self.app.tables.changelog_topics
        standbys = self.app.assignor.assigned_standbys()
        own = {tp for tp in self.assignment() if tp.topic in changelogs and tp not in standbys}
        if not own:
            return
        self.pause_partitions(own)
        kafka = self._thread._ensure_consumer()

        async def pause() -> None:  # in the consumer's thread, which owns aiokafka's state
            assigned = kafka.assignment()  # a rebalance may have begun meanwhile
            kafka.pause(*(tp for tp in (TopicPartition(*tp) for tp in own) if tp in assigned))

        await self._thread.call_thread(pause)

    def take_in_bulk(self, topic: str, *, high: int, low: int) -> BulkRecords:
        """The buffer that `topic`'s records go to as they are fetched, in lists, instead of one
        by one to the topic's stream (`trellis.common.faust_bulk`); taken in order."""
        records = BulkRecords(self.app, topic, high=high, low=low, in_order=self.take_in_order)
        self._bulk[topic] = records
        return records

    async def _wait_next_records(self, timeout: float) -> Any:
        for bulk in self._bulk.values():
            await bulk.room()  # fetch no more than its processor can hold
        records, active = await super()._wait_next_records(timeout)
        # With the flow stopped Faust drops the whole fetch and seeks back; so do these records.
        if records and self._bulk and self.flow_active:
            to_message = self._to_message
            for tp in [tp for tp in records if tp.topic in self._bulk]:
                fetched = cast(dict[TP, Any], records).pop(tp)
                # As Faust's `getmany`: a partition paused since the fetch began is dropped.
                if active is None or tp in active or tp in self._buffered_partitions:
                    self._bulk[tp.topic].add(tp, [to_message(tp, record) for record in fetched])
        return records, active

    async def seek_to_committed(self) -> Mapping[Any, int]:
        committed = await super().seek_to_committed()
        # Only the streams' topics: changelog positions belong to table recovery.
        streams = {
            tp: offset
            for tp, offset in committed.items()
            if self.app.topics.acks_enabled_for(tp.topic)
        }
        never = [tp for tp, offset in streams.items() if not offset]
        starts = {tp: offset for tp, offset in streams.items() if offset}
        if never:
            beginnings = await self.earliest_offsets(*never)
            log.info(
                "no committed offset: reading from the beginning",
                offsets={f"{tp.topic}/{tp.partition}": offset for tp, offset in beginnings.items()},
            )
            await self.seek_wait(beginnings)
            starts.update(beginnings)
        for tp, offset in starts.items():
            self._expected[TP(tp.topic, tp.partition)] = offset
        return committed

    def take_in_order(self, message: Message) -> bool:
        """Whether a stream may process `message`: it is the next record of its partition (or
        the order is unknown). If not, it is dropped and never committed, and the partition is
        sought back to the record expected."""
        tp = message.tp
        expected = self._expected.get(tp)
        if expected is None or message.offset == expected:
            if expected is not None:
                self._expected[tp] = expected + 1
            return True
        # Never counted for a commit, and nobody waits for it. Marked acked, not only untracked:
        # Faust's compiled stream iterator acks a skipped record inline, not through `ack`.
        message.tracked = False
        message.acked = True
        self._unacked_messages.discard(message)
        if message.offset > expected and tp not in self._rewinding:
            log.warning(
                "records missing before this one: reading the partition again from the first",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                expected=expected,
            )
            self._rewinding[tp] = asyncio.ensure_future(self._rewind(tp, expected))
        return False

    async def _rewind(self, tp: TP, offset: int) -> None:
        try:
            await self.seek_wait({TopicPartition(tp.topic, tp.partition): offset})
        finally:
            del self._rewinding[tp]

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        if tp in self._expected:
            log.info(
                "records past a seek: not a gap in the log",
                topic=tp.topic,
                partition=tp.partition,
                offsets=(offset_from, offset_to),
            )
            return
        await super()._add_gap(tp, offset_from, offset_to)

    def ack(self, message: Message) -> bool:
        if not message.tracked:
            log.info(
                "a record the stream skipped stays uncommitted",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
            )
            return False
        return super().ack(message)


class RebalanceSafeTransport(Transport):
    """Faust's aiokafka transport, its consumer a `RebalanceSafeConsumer`."""

    Consumer = RebalanceSafeConsumer
