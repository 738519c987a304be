"""The activity agent: micro-batches of events, applied by the mastery service, outputs published,
failures dead-lettered.

One agent (concurrency 1: with more, Faust can commit offsets past events still in flight) takes
up to `BATCH_MAX` events, the batch going once no more are waiting after its wait (at least
`BATCH_LINGER_S`, longer under load: `stream.batching`). Per batch, in this order:
1. each event is decoded and applied in the order read (a learner's events are in one partition,
   so in their order), over `StagedWrites`: a learner's state is read once per batch, and a bad
   event becomes a dead letter (original bytes, error, source topic/partition/offset);
2. every output and dead letter is sent, and the broker's acknowledgement of all of them awaited
   (resent until it comes: a batch is never half stored and never skipped); they go to the
   producer every `OUTPUT_EVERY_S` while step 1 runs (`EarlyOutputs`), so an event's outputs
   leave soon after it is applied, not after the whole batch;
3. each changed learner is written once to the table: its changelog record, awaited until the
   broker stored it, then RocksDB (`TableLearnerStore.write_stored_first`);
4. the batch's events are acked: Faust commits their offsets later, after flushing the producer.
So offsets are committed only after outputs and state are stored. A crash before step 3 applies
the events again from the old state (same outputs, same deterministic ids); after it, they are
duplicates in the dedup window and re-send the outputs kept for them.

The agent never raises on an event: an exception in a Faust agent restarts it and loses the
batch's place, so every failure becomes a dead letter instead.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import faust
from aiokafka import AIOKafkaProducer
from faust.events import Event
from faust.streams import _current_event
from faust.types import AgentT, EventT
from prometheus_client import Counter

from trellis.common.codec import CodecError, decode_envelope, headers_for
from trellis.common.kafka import dead_letter
from trellis.common.logging import get_logger
from trellis.common.pb.events.v1 import envelope_pb2
from trellis.mastery.events import InvalidEvent
from trellis.mastery.service import MasteryService
from trellis.mastery.stream.batching import activity_records, adaptive_batches
from trellis.mastery.stream.sending import (
    Outgoing,
    Submitted,
    kafka_producer,
    send_all,
    submit_all,
    wait_stored,
)
from trellis.mastery.stream.staging import StagedWrites
from trellis.mastery.stream.topics import Topics

CONSUMER = "trellis-mastery"
#: Events per micro-batch at most; how long a batch waits for more after its first event at least
#: (the latency it adds at low rates), and at most. Under load batches wait longer and grow
#: (`stream.batching`), and bigger batches pay off through fewer state writes (a learner's events
#: of a batch are written once) and fewer waits for the broker; a full batch goes at once. At
#: most 100 ms since records come in lists (200 ms before: p99 at 5,000 events/s 468-678 against
#: 350-385 ms). Measured in docs/mastery-performance.md.
BATCH_MAX = 4_000
BATCH_LINGER_S = 0.01
BATCH_WITHIN_S = 0.1
#: Pause before sending a batch's records again when the broker did not acknowledge them.
RESEND_PAUSE_S = 1.0
#: While a batch is applied, its outputs go to the producer at least this often (`EarlyOutputs`):
#: by time, not count, so that a large batch on a backlog is not cut into many small sends.
OUTPUT_EVERY_S = 0.02

EVENTS = Counter(
    "trellis_mastery_activity_events",
    "Activity events read by the mastery worker, by outcome.",
    ["outcome"],  # applied, duplicate, skipped, dead_letter
)
OUTPUTS = Counter("trellis_mastery_outputs", "Mastery events published, by kind.", ["kind"])
#: The headers of every output (`headers_for` an envelope), made once.
OUTPUT_HEADERS = headers_for(envelope_pb2.Envelope())

_log = get_logger("trellis.mastery.stream")


def register_agents(
    app: faust.App, topics: Topics, service: MasteryService, staged: StagedWrites
) -> AgentT[Any]:
    """Attach the activity agent to `app`; returns it (for `agent.test_context()` in tests).

    `service` must write through `staged` (see `trellis.mastery.stream.app`)."""

    async def process_activity(stream: faust.StreamT[bytes]) -> None:
        # The records come in lists from the consumer; acked here, once stored.
        records = activity_records(stream, topics.activity.get_topic_name(), 2 * BATCH_MAX)
        batches = adaptive_batches(records, app.consumer, BATCH_MAX, BATCH_LINGER_S, BATCH_WITHIN_S)
        async for messages in batches:
            events = [Event(app, m.key, m.value, m.headers, m) for m in messages]
            await handle_batch(events, topics, service, staged)
            records.ack(events)

    return app.agent(topics.activity, name="mastery.process_activity", concurrency=1)(
        process_activity
    )


async def handle_batch(
    events: Sequence[EventT[bytes]], topics: Topics, service: MasteryService, staged: StagedWrites
) -> None:
    records: list[Outgoing] = []
    outputs = EarlyOutputs(kafka_producer(topics.mastery.app))
    last_of_key: dict[bytes, EventT[bytes]] = {}
    # Counted per batch: a metric's `inc` takes a lock, and costs more than a tally's.
    outcomes: Tally[str] = Tally()
    kinds: Tally[str] = Tally()
    for event in events:
        key = event.key or b""
        last_of_key[key] = event
        with acting_for(event):
            records += _apply(event, key, topics, service, outcomes, kinds)
        if time.monotonic() - outputs.handed_at >= OUTPUT_EVERY_S:
            await outputs.hand(records)
    for outcome, count in outcomes.items():
        EVENTS.labels(outcome).inc(count)
    for kind, count in kinds.items():
        OUTPUTS.labels(kind).inc(count)
    try:
        await outputs.stored(records)
    except Exception:
        _log.exception("batch not stored by the broker: sending again", what="outputs")
        await asyncio.sleep(RESEND_PAUSE_S)
        await _until_stored(lambda: _publish(topics, records), "outputs", len(records))
    await _until_stored(
        lambda: staged.flush(lambda key: acting_for(last_of_key[key])), "states", len(last_of_key)
    )


class EarlyOutputs:
    """A batch's outputs and dead letters handed to the producer part by part while the batch
    is still being applied (`hand`), so that an event's outputs leave when its chunk is
    applied, not when the whole batch is; `stored` hands the rest and waits until the broker has
    stored them all. Nothing else changes: states are still written only after that, and a
    failure anywhere makes the caller send every output of the batch again."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._submitted: list[Submitted] = []
        self._failure: Exception | None = None
        self._handed = 0  # how many of the batch's records went to the producer
        self.handed_at = time.monotonic()

    async def hand(self, records: list[Outgoing]) -> None:
        if self._failure is not None or len(records) == self._handed:
            return
        try:
            self._submitted += await submit_all(self._producer, records[self._handed :])
        except Exception as exc:  # left to `stored`, which raises it: the caller sends again
            self._failure = exc
            return
        self._handed = len(records)
        await asyncio.sleep(0)  # a loop turn: the producer's sender writes them now
        self.handed_at = time.monotonic()

    async def stored(self, records: list[Outgoing]) -> None:
        await self.hand(records)
        await wait_stored(self._submitted)  # every answer awaited; raises a refused batch's error
        if self._failure is not None:
            raise self._failure


class acting_for:
    """Make `event` Faust's current event: the table picks the partition it reads and writes
    (RocksDB file, changelog partition) from it, and in a batch that is not the last one read.
    (A class, not `contextlib.contextmanager`: used several times per event, a third of the
    cost.)"""

    __slots__ = ("_event", "_token")

    def __init__(self, event: EventT[bytes]) -> None:
        self._event = event

    def __enter__(self) -> None:
        self._token = _current_event.set(weakref.ref(self._event))

    def __exit__(self, *_: object) -> None:
        _current_event.reset(self._token)


def _apply(
    event: EventT[bytes],
    key: bytes,
    topics: Topics,
    service: MasteryService,
    outcomes: Tally[str],
    kinds: Tally[str],
) -> list[Outgoing]:
    message = event.message
    try:
        envelope = decode_envelope(event.value, _headers(event.headers))
        handled = service.record_activity(key, envelope)
    except (CodecError, InvalidEvent) as exc:
        return [_dead_letter(topics, message, str(exc))]
    except Exception as exc:  # never let the agent die on one event
        _log.exception("activity event failed", topic=message.topic, offset=message.offset)
        return [_dead_letter(topics, message, f"unexpected {type(exc).__name__}: {exc}")]
    if handled.skipped is not None:
        outcomes["skipped"] += 1
        _log.debug("activity event skipped", reason=handled.skipped, event_id=envelope.event_id)
    else:
        outcomes["duplicate" if handled.duplicate else "applied"] += 1
    records: list[Outgoing] = []
    for output in handled.outputs:
        # Keyed like the event: outputs copy its tenant and learner, and `record_activity`
        # checked that the event's key is theirs (`encode_envelope` would make the same key).
        value = output.SerializeToString(deterministic=True)
        records.append((topics.mastery_name, None, key, value, OUTPUT_HEADERS))
        kinds[output.WhichOneof("payload") or "none"] += 1
    return records


async def _publish(topics: Topics, records: list[Outgoing]) -> None:
    """Send the records and wait until the broker stored all of them. Straight to the app's
    producer, in record batches: `Topic.send` adds Faust's per-message bookkeeping (pending
    message, future, monitor), which cost as much as the rest of sending."""
    await send_all(kafka_producer(topics.mastery.app), records)


async def _until_stored(step: Callable[[], Awaitable[None]], what: str, count: int) -> None:
    """Run `step` until it succeeds: the broker did not store its records, so send them again
    (ids are deterministic, so a second copy is a duplicate that subscribers drop)."""
    while True:
        try:
            await step()
            return
        except Exception:
            _log.exception("batch not stored by the broker: sending again", what=what, n=count)
            await asyncio.sleep(RESEND_PAUSE_S)


def _dead_letter(topics: Topics, message: Any, error: str) -> Outgoing:
    EVENTS.labels("dead_letter").inc()
    # A Faust message carries the fields the helper reads (topic, partition, offset, key, value).
    letter = dead_letter(cast(Any, message), error, CONSUMER)
    _log.warning(
        "activity event dead-lettered",
        error=error,
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
    )
    return (
        topics.deadletter_name,
        None,
        letter.original_key or None,
        letter.SerializeToString(),
        headers_for(letter),
    )


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    return [(str(k), bytes(v)) for k, v in items]
