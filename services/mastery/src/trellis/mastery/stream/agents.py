"""The activity agent: decode, apply the mastery service, publish the outputs, dead-letter the rest.

One event at a time (concurrency 1: with more, Faust can commit offsets past events still in
flight). The agent never raises: an exception in a Faust agent acks the event and restarts the
agent, silently skipping it, so every failure goes to the dead-letter topic instead, with the
original bytes, the error and the source topic/partition/offset. State writes are idempotent by
event id (see `trellis.mastery.domain`), so at-least-once redelivery never counts twice.
"""

from __future__ import annotations

from typing import Any, cast

import faust
from faust.types import AgentT, EventT
from prometheus_client import Counter

from trellis.common.codec import CodecError, decode_envelope, encode_envelope, headers_for
from trellis.common.kafka import dead_letter
from trellis.common.logging import get_logger
from trellis.mastery.events import InvalidEvent
from trellis.mastery.service import MasteryService
from trellis.mastery.stream.topics import Topics

CONSUMER = "trellis-mastery"

EVENTS = Counter(
    "trellis_mastery_activity_events",
    "Activity events read by the mastery worker, by outcome.",
    ["outcome"],  # applied, duplicate, skipped, dead_letter
)
OUTPUTS = Counter("trellis_mastery_outputs", "Mastery events published, by kind.", ["kind"])

_log = get_logger("trellis.mastery.stream")


def register_agents(app: faust.App, topics: Topics, service: MasteryService) -> AgentT[Any]:
    """Attach the activity agent to `app`; returns it (for `agent.test_context()` in tests)."""

    async def process_activity(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await handle_event(event, topics, service)

    return app.agent(topics.activity, name="mastery.process_activity", concurrency=1)(
        process_activity
    )


async def handle_event(event: EventT[bytes], topics: Topics, service: MasteryService) -> None:
    message = event.message
    try:
        envelope = decode_envelope(event.value, _headers(event.headers))
        handled = service.record_activity(event.key or b"", envelope)
    except (CodecError, InvalidEvent) as exc:
        await _dead_letter(topics, message, str(exc))
        return
    except Exception as exc:  # never let the agent die on one event
        _log.exception("activity event failed", topic=message.topic, offset=message.offset)
        await _dead_letter(topics, message, f"unexpected {type(exc).__name__}: {exc}")
        return
    if handled.skipped is not None:
        EVENTS.labels("skipped").inc()
        _log.debug("activity event skipped", reason=handled.skipped, event_id=envelope.event_id)
    else:
        EVENTS.labels("duplicate" if handled.duplicate else "applied").inc()
    for output in handled.outputs:
        encoded = encode_envelope(output)
        await topics.mastery.send(key=encoded.key, value=encoded.value, headers=encoded.headers)
        OUTPUTS.labels(output.WhichOneof("payload") or "none").inc()


async def _dead_letter(topics: Topics, message: Any, error: str) -> None:
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
    try:
        await topics.deadletter.send(
            key=letter.original_key or None,
            value=letter.SerializeToString(),
            headers=headers_for(letter),
        )
    except Exception:
        _log.exception("dead letter could not be sent", source_offset=message.offset)


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    items = headers.items() if hasattr(headers, "items") else headers
    return [(str(k), bytes(v)) for k, v in items]
