"""Micro-batches of the activity records that go as soon as no more are waiting.

Faust's `noack_take(max, within)` always waits the whole `within` unless the batch fills, so its
window is latency at every rate (200 ms: p50 near 160 ms at 1,000 events/s). Here a batch goes
once it is full, or once its wait is over and the worker has caught up: in none of the
partitions it took records from does the broker hold more than `BACKLOG` records past the last
one fetched (the consumer's highwater marks); or `within_s` after its first record at the latest.
Its wait, from the arrival of its first record: as long as the caller took over the previous
batch, between `linger_s` and `within_s`. So at low rates a batch waits `linger_s`; as the load
grows, batches grow with the time they take (the worker spends no more time on a batch than it
waited for it), and on a backlog they go full, at once. Bigger batches cost less per event: a
learner is written once for all their events in a batch, and the broker waited for less often.
(Measured: with a fixed 10 ms wait, batches of 20 to 40 events at 2,000 events/s cost more CPU
than the worker had, and it fell behind more often than with 200 ms; without the `BACKLOG`
margin, events arriving at a steady rate always showed a newer offset, and batches waited nearly
`within_s` at 1,000 events/s.)

The records come from the consumer in lists (`trellis.common.faust_bulk`); the records the
agent's stream still gets (its test context) are added to the same buffer. A batch's records are
tracked when taken and not acked: the caller acks them once they are stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import faust
from faust.types import TP, ConsumerT, Message

from trellis.common.faust_bulk import BulkRecords
from trellis.common.faust_consumer import RebalanceSafeConsumer

#: Events per partition on the broker past a batch that count as a backlog worth waiting for.
BACKLOG = 20


def activity_records(stream: faust.StreamT[Any], topic: str, high: int) -> BulkRecords:
    """The buffer of `topic`, the stream's: filled by the consumer as it fetches, and with
    whatever reaches the stream itself, which is drained in the background (its acks off)."""
    faust_stream = cast(faust.Stream[Any], stream)
    consumer = faust_stream.app.consumer
    if not isinstance(consumer, RebalanceSafeConsumer):  # every app from `create_app` has one
        raise TypeError(f"records in lists need a RebalanceSafeConsumer, not {type(consumer)}")
    records = consumer.take_in_bulk(topic, high=high, low=high // 2)

    def add(value: Any) -> Any:
        event = faust_stream.current_event
        if event is None:
            raise RuntimeError("a stream value without its event")
        records.add(event.message.tp, [event.message])
        return value

    faust_stream.enable_acks = False
    faust_stream.add_processor(add)
    faust_stream._enable_passive(cast(faust.ChannelT[Any], aiter(faust_stream.channel)))
    return records


async def adaptive_batches(
    records: BulkRecords, consumer: ConsumerT, max_events: int, linger_s: float, within_s: float
) -> AsyncIterator[list[Message]]:
    """Batches of at most `max_events` records, in the order fetched, tracked, not acked."""
    held = 0.0  # how long the caller took over the last batch
    while True:
        await records.arrived()
        wait = min(within_s, max(linger_s, held))
        # From the oldest record's arrival: records that waited while the caller held the last
        # batch have waited already. The consumer adds meanwhile; polled, as waking on every
        # fetch would cost more than it saves. A full batch goes at once.
        while len(records) < max_events:
            waited = time.monotonic() - records.since
            if waited >= within_s or (
                waited >= wait and not _behind(consumer, records.last_offsets)
            ):
                break
            await asyncio.sleep(min(linger_s, (wait if waited < wait else within_s) - waited))
        batch = records.take(max_events)
        if not batch:  # all of it from before a rebalance, or out of order
            continue
        yielded = time.monotonic()
        yield batch
        held = time.monotonic() - yielded


def _behind(consumer: ConsumerT, last_offsets: Mapping[TP, int]) -> bool:
    """The consumer knows of more than `BACKLOG` records after `last_offsets` in one of their
    partitions."""
    for tp, offset in last_offsets.items():
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # not assigned any more, or no consumer (tests): nothing to wait for
            continue
        if highwater is not None and highwater - (offset + 1) > BACKLOG:
            return True
    return False
