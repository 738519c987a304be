"""A topic's records handed to its processor in lists, around Faust's per-record path.

Faust delivers each fetched record on its own: two tasks and a wait per record in its fetch
loop (`wait_first`), the conductor's handler, an event and a queue put per channel, the stream's
iterator with its processors, and an ack through the stream: on the mastery worker's backlog
about as much CPU per event as the worker's own work (docs/mastery-performance.md, "Records in
lists"). For a topic registered with `RebalanceSafeConsumer.take_in_bulk`, the consumer instead
appends each fetch's records, as Faust messages, to the topic's `BulkRecords` as the fetch
returns them, and its processor takes them in lists and acks them when done. Whatever still
reaches the topic's stream (an agent's test context, records fetched before the registration)
is added to the same buffer (`add`).

What Faust's stream does per record is done here per list, with the same rules:
- a record fetched in an older generation of the group, or while the flow is stopped (a
  rebalance), is dropped when taken: never tracked, never committed; the seek to the committed
  offsets that ends every rebalance reads it again;
- a taken record is tracked (Faust's unacked set) until acked, so that a rebalance waits for it
  (`Consumer.wait_empty`) and a commit covers only acked records;
- the consumer's order guard (`take_in_order`) sees every record taken, in the order fetched;
- past `high` records waiting, the consumer fetches nothing more (`room`) until the processor
  took them down to `low`. (Not by pausing the partitions, as Faust does for a full channel: with
  every partition paused, Faust's fetch loop sleeps a whole second before it looks again, and
  the worker with it.)
Faust's per-record sensor calls are left out (its `Monitor` statistics, which nothing here
reads), except `on_stream_event_out` for the last record acked per partition, which tells the
read API what the worker applied (`trellis.mastery.adapters.placement`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from faust.types import TP, AppT, EventT, Message


class BulkRecords:
    """The records of one topic fetched and not taken yet, in the order fetched."""

    def __init__(
        self,
        app: AppT,
        topic: str,
        *,
        high: int,
        low: int,
        in_order: Callable[[Message], bool],
    ) -> None:
        self.topic = topic
        self._app = app
        self._high = high
        self._low = low
        self._in_order = in_order
        self._waiting: deque[Message] = deque()
        #: When the oldest record waiting arrived (`time.monotonic()`).
        self.since = 0.0
        # Per partition, the offset of the last record added (what the broker may have past it).
        self.last_offsets: dict[TP, int] = {}
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, tp: TP, messages: Sequence[Message]) -> None:
        """Records fetched from `tp`, in offset order."""
        if not messages:
            return
        if not self._waiting:
            self.since = time.monotonic()
        self._waiting.extend(messages)
        self.last_offsets[tp] = messages[-1].offset
        self._arrived.set()
        if len(self._waiting) >= self._high:
            self._room.clear()

    async def room(self) -> None:
        """Wait until fewer than `high` records wait, or `low` once `high` was reached."""
        await self._room.wait()

    async def arrived(self) -> None:
        """Wait until a record is waiting."""
        if not self._waiting:
            await self._arrived.wait()

    def take(self, most: int) -> list[Message]:
        """Up to `most` records in the order fetched, tracked; those fetched in an older
        generation, while the flow was stopped, or out of order are dropped (untracked)."""
        app = self._app
        generation = app.consumer_generation_id
        flowing = app.flow_control.is_active()
        unacked = cast(Any, app.consumer)._unacked_messages
        in_order = self._in_order
        waiting = self._waiting
        taken: list[Message] = []
        while waiting and len(taken) < most:
            message = waiting.popleft()
            if not flowing or message.generation_id != generation:
                continue
            if not in_order(message):
                continue
            message.tracked = True
            unacked.add(message)
            taken.append(message)
        if not waiting:
            self._arrived.clear()
            self.last_offsets.clear()
        if len(waiting) <= self._low:
            self._room.set()
        return taken

    def ack(self, events: Iterable[EventT[Any]]) -> None:
        """The records of `events` are processed: their offsets may be committed."""
        app = self._app
        ack = app.consumer.ack
        last: dict[TP, EventT[Any]] = {}
        for event in events:
            ack(event.message)
            last[event.message.tp] = event
        on_out = app.sensors.on_stream_event_out
        for tp, event in last.items():
            on_out(tp, event.message.offset, None, event)  # type: ignore[arg-type]
