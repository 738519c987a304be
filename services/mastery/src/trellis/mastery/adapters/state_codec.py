"""How a `LearnerState` is stored in the mastery table (and its changelog topic): compact JSON.

Floats are written with `repr`, which round-trips exactly, so a state read back from a
changelog after a crash continues bit for bit like the live run. The `v` field versions the
format; a reader refuses versions it does not know rather than guessing. Version 2 added the
struggling, review and override fields; version 1 states read as having none of them. Version 3
added the learner profile, classes and the time of an earlier erasure (`profile`, `classes`,
`erased_before`, each only when set); earlier states read with none.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from trellis.mastery.domain import (
    EMPTY_PROFILE,
    AppliedEvent,
    Goal,
    LearnerState,
    Level,
    MasteryChange,
    MasteryOverridden,
    Output,
    Override,
    Pin,
    Profile,
    Reflection,
    ReviewDue,
    SkillMastered,
    SkillState,
    StrugglingDetected,
)

FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


class StateFormatError(ValueError):
    """Stored bytes that are not a learner state of a known format."""


def encode_state(state: LearnerState) -> bytes:
    document = {
        "v": FORMAT_VERSION,
        "skills": {skill_id: _encode_skill(s) for skill_id, s in state.skills.items()},
        "seen": list(state.seen_event_ids),
        "recent": [[a.event_id, [_encode_output(o) for o in a.outputs]] for a in state.recent],
    }
    if state.profile != EMPTY_PROFILE:
        document["profile"] = _encode_profile(state.profile)
    if state.class_ids:
        document["classes"] = list(state.class_ids)
    if state.erased_before is not None:
        document["erased_before"] = state.erased_before.isoformat()
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def decode_state(data: bytes) -> LearnerState:
    try:
        document = json.loads(data)
        if document.get("v") not in READABLE_VERSIONS:
            raise StateFormatError(f"unknown learner state format {document.get('v')!r}")
        skills = {skill_id: _decode_skill(s) for skill_id, s in document["skills"].items()}
        recent = tuple(
            AppliedEvent(event_id, tuple(_decode_output(event_id, o) for o in outputs))
            for event_id, outputs in document["recent"]
        )
        profile = document.get("profile")
        erased = document.get("erased_before")
        return LearnerState(
            skills=skills,
            seen_event_ids=tuple(document["seen"]),
            recent=recent,
            profile=EMPTY_PROFILE if profile is None else _decode_profile(profile),
            class_ids=tuple(document.get("classes", ())),
            erased_before=None if erased is None else datetime.fromisoformat(erased),
        )
    except StateFormatError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise StateFormatError(f"undecodable learner state: {exc}") from exc


def _encode_profile(p: Profile) -> dict[str, Any]:
    return {
        "goals": [[g.goal_id, g.skill_id, g.description, g.target_date] for g in p.goals],
        "reflections": [
            [r.reflection_id, r.text, r.skill_id, r.confidence, _time(r.at)] for r in p.reflections
        ],
        "interests": list(p.interests),
        "modality": p.modality,
        "pace": p.pace,
        "accommodations": list(p.accommodations),
        "pins": [[x.activity_id, x.activity_kind, x.skill_id, x.note] for x in p.pins],
    }


def _decode_profile(d: dict[str, Any]) -> Profile:
    return Profile(
        goals=tuple(Goal(*(str(v) for v in g)) for g in d["goals"]),
        reflections=tuple(
            Reflection(
                str(rid),
                str(text),
                str(skill),
                None if confidence is None else float(confidence),
                None if at is None else datetime.fromisoformat(at),
            )
            for rid, text, skill, confidence, at in d["reflections"]
        ),
        interests=tuple(str(t) for t in d["interests"]),
        modality=str(d["modality"]),
        pace=str(d["pace"]),
        accommodations=tuple(str(a) for a in d["accommodations"]),
        pins=tuple(Pin(*(str(v) for v in x)) for x in d["pins"]),
    )


def _time(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _encode_skill(s: SkillState) -> list[Any]:
    override = s.override
    return [
        s.p_mastered,
        s.attempts,
        _time(s.last_event_time),
        s.model_version,
        s.mastered,
        s.attempts_unmastered,
        s.struggling,
        s.error_tag,
        s.error_streak,
        s.review_due,
        None
        if override is None
        else [
            override.p_mastered,
            override.teacher_id,
            override.reason,
            _time(override.at),
            override.event_id,
        ],
    ]


def _decode_skill(item: list[Any]) -> SkillState:
    p, attempts, when, version = item[:4]
    skill = SkillState(
        p_mastered=float(p),
        attempts=int(attempts),
        last_event_time=None if when is None else datetime.fromisoformat(when),
        model_version=str(version),
    )
    if len(item) == 4:  # format 1
        return SkillState(
            p_mastered=skill.p_mastered,
            attempts=skill.attempts,
            last_event_time=skill.last_event_time,
            model_version=skill.model_version,
            mastered=skill.p_mastered >= 0.95,
            attempts_unmastered=0 if skill.p_mastered >= 0.95 else skill.attempts,
        )
    mastered, unmastered, struggling, tag, streak, review_due, override = item[4:]
    return SkillState(
        p_mastered=skill.p_mastered,
        attempts=skill.attempts,
        last_event_time=skill.last_event_time,
        model_version=skill.model_version,
        mastered=bool(mastered),
        attempts_unmastered=int(unmastered),
        struggling=bool(struggling),
        error_tag=str(tag),
        error_streak=int(streak),
        review_due=bool(review_due),
        override=None
        if override is None
        else Override(
            float(override[0]),
            str(override[1]),
            str(override[2]),
            datetime.fromisoformat(override[3]),
            str(override[4]),
        ),
    )


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
    if isinstance(output, SkillMastered):
        return ["m", output.skill, output.p_mastered]
    if isinstance(output, StrugglingDetected):
        return ["s", output.skill, output.reason, output.attempts, output.error_tag]
    if isinstance(output, MasteryOverridden):
        o = output
        return ["o", o.skill, o.p_before, o.p_after, o.reason, o.teacher_id]
    return ["r", output.skill, output.p_recall]


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
    if item[0] == "s":
        _, skill, reason, attempts, tag = item
        return StrugglingDetected(skill, reason, int(attempts), tag, cause_event_id)
    if item[0] == "o":
        _, skill, p_before, p_after, reason, teacher = item
        return MasteryOverridden(
            skill, float(p_before), float(p_after), reason, teacher, cause_event_id
        )
    if item[0] == "r":
        _, skill, p_recall = item
        return ReviewDue(skill, float(p_recall), cause_event_id)
    raise StateFormatError(f"unknown output kind {item[0]!r}")
