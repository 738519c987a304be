"""Translation between the events.v1 contract and the mastery domain.

Inbound: an `ItemAttempted` envelope becomes a domain `Attempt` and its event time.
Outbound: each domain output becomes an envelope on `trellis.mastery.v1`, with a deterministic id

    event_id = uuid5(OUTPUT_ID_NAMESPACE, f"{cause_event_id}\\x1f{kind}\\x1f{skill_id}")

where `kind` is the payload field name (`mastery_updated`, `skill_mastered`,
`struggling_detected`, `mastery_overridden`, `review_due`, `learner_erased` with an empty skill
id), so that re-sending
the outputs of a replayed event produces the very same ids and consumers drop the copies. Tenant,
school, class, learner, pseudonym key version and both timestamps are copied from the cause (no
wall clock: a replay reproduces the live run).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from trellis.common.pb.events.v1 import envelope_pb2, mastery_pb2
from trellis.mastery.domain import (
    AssignActivity,
    Attempt,
    DeclareInterests,
    Goal,
    InvalidAttempt,
    Level,
    MasteryChange,
    MasteryOverridden,
    Output,
    Pin,
    ProfileChange,
    Reflection,
    ReviewDue,
    SetAccommodations,
    SetGoal,
    SetPreference,
    SkillMastered,
    StrugglingDetected,
    SubmitReflection,
    TeacherOverride,
)

SOURCE_SYSTEM = "trellis-mastery"
OUTPUT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:trellis:events:v1:mastery")
# uuid5's hash with the namespace already fed: copied per id (a new SHA-1 costs OpenSSL 3 a lookup).
_NAMESPACE_SHA1 = hashlib.sha1(OUTPUT_ID_NAMESPACE.bytes, usedforsecurity=False)
_SOURCE = envelope_pb2.Source(system=SOURCE_SYSTEM, actor=envelope_pb2.Source.Actor.ACTOR_SYSTEM)

LEVELS = {
    Level.NOT_STARTED: mastery_pb2.MASTERY_LEVEL_NOT_STARTED,
    Level.PRACTICING: mastery_pb2.MASTERY_LEVEL_PRACTICING,
    Level.FAMILIAR: mastery_pb2.MASTERY_LEVEL_FAMILIAR,
    Level.MASTERED: mastery_pb2.MASTERY_LEVEL_MASTERED,
    Level.REVIEW_DUE: mastery_pb2.MASTERY_LEVEL_REVIEW_DUE,
}

KINDS: dict[type, str] = {
    MasteryChange: "mastery_updated",
    SkillMastered: "skill_mastered",
    StrugglingDetected: "struggling_detected",
    MasteryOverridden: "mastery_overridden",
    ReviewDue: "review_due",
}


class InvalidEvent(ValueError):
    """An activity event that decodes but cannot be applied: it goes to the dead-letter topic."""


def attempt_from_envelope(envelope: envelope_pb2.Envelope) -> tuple[Attempt, datetime]:
    """The attempt of an `ItemAttempted` envelope and its event time (`occurred_at`, else
    `ingested_at`). Skill ids come as given; an empty list is the caller's to handle."""
    attempted = envelope.item_attempted
    if attempted.HasField("score"):
        score = attempted.score
    elif attempted.HasField("correct"):
        score = 1.0 if attempted.correct else 0.0
    else:
        raise InvalidEvent("item_attempted has neither correct nor score")
    try:
        attempt = Attempt(envelope.event_id, tuple(attempted.skill_ids), score, attempted.error_tag)
    except InvalidAttempt as exc:
        raise InvalidEvent(str(exc)) from exc
    return attempt, event_time(envelope)


def override_from_envelope(envelope: envelope_pb2.Envelope) -> tuple[TeacherOverride, datetime]:
    """The override of a `TeacherOverride` envelope (the teacher is the source's actor id)."""
    payload = envelope.teacher_override
    try:
        override = TeacherOverride(
            envelope.event_id,
            payload.skill_id,
            payload.p_mastered,
            envelope.source.actor_id,
            payload.reason,
        )
    except InvalidAttempt as exc:
        raise InvalidEvent(str(exc)) from exc
    return override, event_time(envelope)


PROFILE_PAYLOADS = frozenset(
    {
        "goal_set",
        "reflection_submitted",
        "interest_declared",
        "preference_set",
        "accommodation_set",
        "activity_assigned",
    }
)


def profile_change_from_envelope(
    envelope: envelope_pb2.Envelope,
) -> tuple[ProfileChange, datetime]:
    """The profile change of a profile envelope (`PROFILE_PAYLOADS`) and its event time."""
    now = event_time(envelope)
    kind = envelope.WhichOneof("payload")
    change: ProfileChange
    if kind == "goal_set":
        g = envelope.goal_set
        # A goal without an id is its own goal: the event id names it.
        change = SetGoal(
            Goal(g.goal_id or envelope.event_id, g.skill_id, g.description, g.target_date)
        )
    elif kind == "reflection_submitted":
        r = envelope.reflection_submitted
        confidence = r.confidence if r.HasField("confidence") else None
        change = SubmitReflection(
            Reflection(r.reflection_id or envelope.event_id, r.text, r.skill_id, confidence, now)
        )
    elif kind == "interest_declared":
        change = DeclareInterests(tuple(envelope.interest_declared.tags))
    elif kind == "preference_set":
        p = envelope.preference_set
        change = SetPreference(p.modality, p.pace)
    elif kind == "accommodation_set":
        change = SetAccommodations(tuple(envelope.accommodation_set.accommodations))
    elif kind == "activity_assigned":
        a = envelope.activity_assigned
        if not a.activity_id:
            raise InvalidEvent("activity_assigned names no activity_id")
        change = AssignActivity(Pin(a.activity_id, a.activity_kind, a.skill_id, a.note))
    else:
        raise InvalidEvent(f"payload {kind} is not a profile event")
    return change, now


def event_time(envelope: envelope_pb2.Envelope) -> datetime:
    if envelope.HasField("occurred_at"):
        return envelope.occurred_at.ToDatetime(tzinfo=UTC)
    if envelope.HasField("ingested_at"):
        return envelope.ingested_at.ToDatetime(tzinfo=UTC)
    raise InvalidEvent("event has neither occurred_at nor ingested_at")


def output_kind(output: Output) -> str:
    return KINDS[type(output)]


def output_event_id(cause_event_id: str, kind: str, skill_id: str) -> str:
    """`str(uuid.uuid5(OUTPUT_ID_NAMESPACE, name))`, a third of its cost (one per output)."""
    sha1 = _NAMESPACE_SHA1.copy()
    sha1.update(f"{cause_event_id}\x1f{kind}\x1f{skill_id}".encode())
    digest = bytearray(sha1.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _output_base(cause: envelope_pb2.Envelope, event_id: str) -> envelope_pb2.Envelope:
    envelope = envelope_pb2.Envelope(
        event_id=event_id,
        tenant_id=cause.tenant_id,
        school_id=cause.school_id,
        class_id=cause.class_id,
        learner_id=cause.learner_id,
        pseudonym_key_version=cause.pseudonym_key_version,
    )
    envelope.source.CopyFrom(_SOURCE)
    if cause.HasField("occurred_at"):
        envelope.occurred_at.CopyFrom(cause.occurred_at)
    if cause.HasField("ingested_at"):
        envelope.ingested_at.CopyFrom(cause.ingested_at)
    return envelope


def erased_envelope(cause: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    """`LearnerErased` for a `LearnerErasureRequested` envelope: id from the cause's id, kind
    `learner_erased` and an empty skill id, so a re-read request re-sends the same event."""
    envelope = _output_base(cause, output_event_id(cause.event_id, "learner_erased", ""))
    envelope.learner_erased.cause_event_id = cause.event_id
    return envelope


def output_envelope(cause: envelope_pb2.Envelope, output: Output) -> envelope_pb2.Envelope:
    """The envelope of one output, caused by the activity envelope `cause`."""
    kind = output_kind(output)
    envelope = _output_base(cause, output_event_id(output.cause_event_id, kind, output.skill))
    if isinstance(output, MasteryChange):
        # Field by field: one per attempt, and half the cost of building a message to copy.
        updated = envelope.mastery_updated
        updated.skill_id = output.skill
        updated.p_before = output.p_before
        updated.p_after = output.p_after
        updated.level = LEVELS[output.level]
        updated.cause_event_id = output.cause_event_id
        updated.model_version = output.model_version
        updated.attempts = output.attempts
    elif isinstance(output, SkillMastered):
        envelope.skill_mastered.CopyFrom(
            mastery_pb2.SkillMastered(
                skill_id=output.skill,
                p_mastered=output.p_mastered,
                cause_event_id=output.cause_event_id,
            )
        )
    elif isinstance(output, StrugglingDetected):
        envelope.struggling_detected.CopyFrom(
            mastery_pb2.StrugglingDetected(
                skill_id=output.skill,
                reason=output.reason,
                attempts=output.attempts,
                error_tag=output.error_tag,
                cause_event_id=output.cause_event_id,
            )
        )
    elif isinstance(output, MasteryOverridden):
        envelope.mastery_overridden.CopyFrom(
            mastery_pb2.MasteryOverridden(
                skill_id=output.skill,
                p_before=output.p_before,
                p_after=output.p_after,
                reason=output.reason,
                teacher_id=output.teacher_id,
                cause_event_id=output.cause_event_id,
            )
        )
    else:
        envelope.review_due.CopyFrom(
            mastery_pb2.ReviewDue(
                skill_id=output.skill,
                p_recall=output.p_recall,
                cause_event_id=output.cause_event_id,
            )
        )
    return envelope
