"""Validation of ingested records: pure functions that name the path of every wrong field.

A bad item never sinks its batch: each item is answered on its own with these violations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from trellis.common.pb.events.v1 import activity_pb2, catalog_pb2, envelope_pb2, roster_pb2

MAX_ID_LENGTH = 128
MAX_DURATION_SECONDS = 24 * 3600.0
MAX_CLOCK_SKEW = timedelta(minutes=5)
ACTIVITY_PAYLOADS = frozenset(
    f.name
    for f in envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["payload"].fields
    if f.message_type is not None and f.message_type.file.name == "trellis/events/v1/activity.proto"
)


@dataclass(frozen=True, slots=True)
class Violation:
    field: str
    reason: str


def _check_id(path: str, value: str, *, required: bool = True) -> list[Violation]:
    if not value:
        return [Violation(path, "is required")] if required else []
    if len(value) > MAX_ID_LENGTH:
        return [Violation(path, f"is longer than {MAX_ID_LENGTH} characters")]
    if "/" in value or "\x00" in value:
        return [Violation(path, "must not contain '/' or NUL")]
    return []


def _check_fraction(path: str, value: float) -> list[Violation]:
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        return [Violation(path, "must be within 0..1")]
    return []


def _check_item_attempted(path: str, attempt: activity_pb2.ItemAttempted) -> list[Violation]:
    violations = _check_id(f"{path}.item_id", attempt.item_id)
    for i, skill_id in enumerate(attempt.skill_ids):
        violations += _check_id(f"{path}.skill_ids[{i}]", skill_id)
    if not attempt.HasField("correct") and not attempt.HasField("score"):
        violations.append(Violation(f"{path}.correct", "correct or score is required"))
    if attempt.HasField("score"):
        violations += _check_fraction(f"{path}.score", attempt.score)
    duration = attempt.duration_seconds
    if math.isnan(duration) or not 0.0 <= duration <= MAX_DURATION_SECONDS:
        violations.append(
            Violation(f"{path}.duration_seconds", f"must be within 0..{MAX_DURATION_SECONDS:.0f}")
        )
    return violations


def _check_payload(path: str, envelope: envelope_pb2.Envelope) -> list[Violation]:
    kind = envelope.WhichOneof("payload")
    if kind is None:
        return [Violation(f"{path}.payload", "is required")]
    if kind not in ACTIVITY_PAYLOADS:
        return [Violation(f"{path}.{kind}", "is not an activity payload")]
    if kind == "item_attempted":
        return _check_item_attempted(f"{path}.{kind}", envelope.item_attempted)
    if kind == "resource_engaged":
        engaged = envelope.resource_engaged
        return (
            _check_id(f"{path}.{kind}.resource_id", engaged.resource_id)
            + _check_fraction(f"{path}.{kind}.completion", engaged.completion)
            + (
                [Violation(f"{path}.{kind}.seconds", "must not be negative")]
                if not engaged.seconds >= 0
                else []
            )
        )
    if kind == "teacher_override":
        override = envelope.teacher_override
        return _check_id(f"{path}.{kind}.skill_id", override.skill_id) + _check_fraction(
            f"{path}.{kind}.p_mastered", override.p_mastered
        )
    return []


def validate_event(
    envelope: envelope_pb2.Envelope, path: str, tenant_id: str, now: datetime
) -> list[Violation]:
    """Violations of one activity event sent by a caller of `tenant_id` at `now`."""
    violations = _check_id(f"{path}.event_id", envelope.event_id)
    if envelope.tenant_id and envelope.tenant_id != tenant_id:
        violations.append(Violation(f"{path}.tenant_id", "does not match the request's tenant"))
    violations += _check_id(f"{path}.learner_id", envelope.learner_id)
    violations += _check_id(f"{path}.school_id", envelope.school_id, required=False)
    violations += _check_id(f"{path}.class_id", envelope.class_id, required=False)
    if not envelope.HasField("occurred_at"):
        violations.append(Violation(f"{path}.occurred_at", "is required"))
    else:
        try:
            occurred = envelope.occurred_at.ToDatetime()
        except ValueError:  # seconds outside years 1..9999, or nanos outside 0..999,999,999
            violations.append(Violation(f"{path}.occurred_at", "is not a valid timestamp"))
        else:
            if occurred > now.replace(tzinfo=None) + MAX_CLOCK_SKEW:
                violations.append(Violation(f"{path}.occurred_at", "is in the future"))
    return violations + _check_payload(path, envelope)


def validate_roster(record: roster_pb2.RosterRecord, path: str) -> list[Violation]:
    kind = record.WhichOneof("entity")
    if kind is None:
        return [Violation(f"{path}.entity", "is required")]
    entity = getattr(record, kind)
    violations = _check_id(f"{path}.{kind}.sourced_id", entity.sourced_id)
    if kind == "enrollment":
        violations += _check_id(f"{path}.{kind}.class_id", entity.class_id)
        violations += _check_id(f"{path}.{kind}.user_id", entity.user_id)
        if entity.role not in ("learner", "teacher"):
            violations.append(Violation(f"{path}.{kind}.role", "must be 'learner' or 'teacher'"))
    return violations


def validate_catalog(record: catalog_pb2.CatalogRecord, path: str) -> list[Violation]:
    kind = record.WhichOneof("entity")
    if kind is None:
        return [Violation(f"{path}.entity", "is required")]
    entity = getattr(record, kind)
    if kind == "skill":
        violations = _check_id(f"{path}.skill.skill_id", entity.skill_id)
        for i, prerequisite in enumerate(entity.prerequisite_ids):
            violations += _check_id(f"{path}.skill.prerequisite_ids[{i}]", prerequisite)
        return violations
    if kind in ("item", "resource"):
        return _check_id(f"{path}.{kind}.{kind}_id", getattr(entity, f"{kind}_id"))
    violations = _check_id(f"{path}.model_parameters.version", entity.version)
    for i, skill in enumerate(entity.skills):
        for name in ("prior", "learn", "guess", "slip", "forget"):
            violations += _check_fraction(
                f"{path}.model_parameters.skills[{i}].{name}", getattr(skill, name)
            )
    return violations
