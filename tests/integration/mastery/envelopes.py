"""Activity envelopes as the mastery integration tests send them: one tenant, school and class,
a learner acting in a practice app."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from tests.conftest import TEST_TENANT
from trellis.common.pb.events.v1 import envelope_pb2


def learner_event(
    event_id: str, learner_id: str, when: datetime, **payload: Any
) -> envelope_pb2.Envelope:
    """An envelope occurred and ingested at `when`, with `payload` (e.g. item_attempted=...)."""
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return envelope_pb2.Envelope(
        event_id=event_id,
        tenant_id=TEST_TENANT,
        school_id="school-1",
        class_id="class-7a",
        learner_id=learner_id,
        pseudonym_key_version=1,
        occurred_at=stamp,
        ingested_at=stamp,
        source=envelope_pb2.Source(
            system="practice-app", actor=envelope_pb2.Source.Actor.ACTOR_LEARNER
        ),
        **payload,
    )
