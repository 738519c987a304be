"""How a `LearnerState` is stored in the mastery table (and its changelog topic): compact JSON.

Floats are written with `repr`, which round-trips exactly, so a state read back from a
changelog after a crash continues bit for bit like the live run. The `v` field versions the
format; a reader refuses versions it does not know rather than guessing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from trellis.mastery.domain import (
    AppliedEvent,
    LearnerState,
    Level,
    MasteryChange,
    Output,
    SkillMastered,
    SkillState,
)

FORMAT_VERSION = 1


class StateFormatError(ValueError):
    """Stored bytes that are not a learner state of a known format."""


def encode_state(state: LearnerState) -> bytes:
    document = {
        "v": FORMAT_VERSION,
        "skills": {
            skill_id: [
                s.p_mastered,
                s.attempts,
                None if s.last_event_time is None else s.last_event_time.isoformat(),
                s.model_version,
            ]
            for skill_id, s in state.skills.items()
        },
        "seen": list(state.seen_event_ids),
        "recent": [[a.event_id, [_encode_output(o) for o in a.outputs]] for a in state.recent],
    }
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def decode_state(data: bytes) -> LearnerState:
    try:
        document = json.loads(data)
        if document.get("v") != FORMAT_VERSION:
            raise StateFormatError(f"unknown learner state format {document.get('v')!r}")
        skills = {
            skill_id: SkillState(
                p_mastered=float(p),
                attempts=int(attempts),
                last_event_time=None if when is None else datetime.fromisoformat(when),
                model_version=str(version),
            )
            for skill_id, (p, attempts, when, version) in document["skills"].items()
        }
        recent = tuple(
            AppliedEvent(event_id, tuple(_decode_output(event_id, o) for o in outputs))
            for event_id, outputs in document["recent"]
        )
        return LearnerState(skills=skills, seen_event_ids=tuple(document["seen"]), recent=recent)
    except StateFormatError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StateFormatError(f"undecodable learner state: {exc}") from exc


def _encode_output(output: Output) -> list[Any]:
    if isinstance(output, MasteryChange):
        return [
            "u",
            output.skill,
            output.p_before,
            output.p_after,
            output.level.value,
            output.attempts,
            output.model_version,
        ]
    return ["m", output.skill, output.p_mastered]


def _decode_output(cause_event_id: str, item: list[Any]) -> Output:
    if item[0] == "u":
        _, skill, p_before, p_after, level, attempts, version = item
        return MasteryChange(
            skill=skill,
            p_before=float(p_before),
            p_after=float(p_after),
            level=Level(level),
            attempts=int(attempts),
            model_version=version,
            cause_event_id=cause_event_id,
        )
    if item[0] == "m":
        _, skill, p_mastered = item
        return SkillMastered(skill, float(p_mastered), cause_event_id)
    raise StateFormatError(f"unknown output kind {item[0]!r}")
