"""Micro-batches of a Faust stream's events that go as soon as no more are waiting.

Faust's `noack_take(max, within)` always waits the whole `within` unless the batch fills, so its
window is latency at every rate (200 ms: p50 near 160 ms at 1,000 events/s). Here a batch goes
once it is full, or once its wait is over and the worker has caught up: nothing in the stream's
channel, and in none of the batch's partitions more than `BACKLOG` events on the broker past the
batch's last offset (the consumer's highwater marks); or `within_s` after its first event at the
latest. Its wait, from its first event: as long as the caller took over the previous batch,
between `linger_s` and `within_s`. So at low rates a batch waits `linger_s`; as the load grows,
batches grow with the time they take (the worker spends no more time on a batch than it waited
for it), and on a backlog they fill as with a fixed window. Bigger batches cost less per event:
a learner is written once for all their events in a batch, and the broker waited for less often.
(Measured: with a fixed 10 ms wait, batches of 20 to 40 events at 2,000 events/s cost more CPU
than the worker had, and it fell behind more often than with 200 ms; without the `BACKLOG`
margin, events arriving at a steady rate always showed a newer offset, and batches waited nearly
`within_s` at 1,000 events/s.)

The buffer is filled like `noack_take`'s, by a processor of the stream drained in the background
(Faust's own `_enable_passive`), with the stream's acks off: the caller acks each event once it
is stored. While the caller holds a batch, the processor waits, so events stay in the channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import faust
from faust.exceptions import Skip
from faust.types import TP, ChannelT, ConsumerT, EventT

from trellis.common.faust_consumer import RebalanceSafeConsumer

#: Events per partition on the broker past a batch that count as a backlog worth waiting for.
BACKLOG = 20


async def adaptive_batches(
    stream: faust.StreamT[Any], max_events: int, linger_s: float, within_s: float
) -> AsyncIterator[list[EventT[Any]]]:
    """Batches of at most `max_events` events, in the order read, not acked."""
    faust_stream = cast(faust.Stream[Any], stream)
    # What the consumer has delivered to the stream and the buffer has not taken yet.
    queue = cast(ChannelT[Any], faust_stream.channel).queue
    buffer: list[EventT[Any]] = []
    last_offsets: dict[TP, int] = {}  # of the batch, per partition
    started = asyncio.Event()  # the batch has its first event
    full = asyncio.Event()
    room = asyncio.Event()  # the processor may add: the caller does not hold the buffer
    room.set()
    consumer = faust_stream.app.consumer
    # Agent tests run on a consumer that keeps no order (no group, no seeks).
    in_order = consumer.take_in_order if isinstance(consumer, RebalanceSafeConsumer) else None

    async def add_to_buffer(value: Any) -> Any:
        while not room.is_set():
            await room.wait()
        event = faust_stream.current_event
        if event is None:
            raise RuntimeError("a stream value without its event")
        if in_order is not None and not in_order(event.message):
            raise Skip()  # records before it were lost on the way; they are read again first
        buffer.append(event)
        last_offsets[event.message.tp] = event.message.offset
        started.set()
        if len(buffer) >= max_events:
            room.clear()  # never more than `max_events` in a batch
            full.set()
        return value

    enable_acks = faust_stream.enable_acks
    faust_stream.enable_acks = False
    faust_stream.add_processor(add_to_buffer)
    faust_stream._enable_passive(cast(ChannelT[Any], aiter(faust_stream.channel)))
    loop = asyncio.get_running_loop()
    held = 0.0  # how long the caller took over the last batch
    try:
        while not faust_stream.should_stop:
            if await faust_stream.wait_for_stopped(started.wait()):
                break
            opened = loop.time()
            # The processor goes on adding meanwhile.
            await asyncio.sleep(min(within_s, max(linger_s, held)))
            while not full.is_set() and (queue.qsize() or _behind(consumer, last_offsets)):
                left = within_s - (loop.time() - opened)
                if left <= 0:
                    break
                # Polled: waking on every event that arrives would cost more than it saves.
                await faust_stream.wait_for_stopped(full.wait(), timeout=min(left, linger_s))
            room.clear()
            yielded = loop.time()
            try:
                yield list(buffer)
            finally:
                held = loop.time() - yielded
                buffer.clear()
                last_offsets.clear()
                started.clear()
                full.clear()
                room.set()
    finally:
        faust_stream.enable_acks = enable_acks
        faust_stream._processors.remove(add_to_buffer)


def _behind(consumer: ConsumerT, last_offsets: Mapping[TP, int]) -> bool:
    """The consumer knows of more than `BACKLOG` events after `last_offsets` in one of their
    partitions."""
    for tp, offset in last_offsets.items():
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # not assigned any more, or no consumer (tests): nothing to wait for
            continue
        if highwater is not None and highwater - (offset + 1) > BACKLOG:
            return True
    return False
