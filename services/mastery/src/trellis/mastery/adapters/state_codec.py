"""How a `LearnerState` is stored in the mastery table (and its changelog topic).

Format 4, binary (`struct`, little-endian), written since the worker's throughput work: the
state is rewritten on every change, so its size is changelog and RocksDB bytes per learner per
batch (see docs/mastery-performance.md). Layout: the magic `MAGIC` and the version byte; the
dedup window (u32 length, then the 8-byte digests); the skills (u16 count, each a fixed
`_SKILL` record and its strings, then the override if its flag is set); the recent outputs (u16
count, each the cause event id, a u8 count and the outputs, one kind byte each); the classes
(u16 count, strings); the time of an earlier erasure (`_ERASED`); and the profile as JSON (u32
length, 0 when empty: it changes rarely and has many optional parts). Strings are u16 length +
UTF-8, times microseconds since the epoch (UTC). Floats are stored as IEEE doubles, so a state
read back from a changelog after a crash continues bit for bit like the live run.

Formats 1 to 3 were JSON (`{"v": ...}`) and are still read: their event ids become digests.
Version 2 added the struggling, review and override fields (version 1 states read as having none
of them); version 3 the learner profile, classes and the time of an earlier erasure. A reader
refuses versions it does not know rather than guessing.
"""

from __future__ import annotations

import functools
import json
import struct
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

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
    event_digest,
)

MAGIC = b"\xb7"  # never the first byte of a JSON document (formats 1 to 3)
FORMAT_VERSION = 4
READABLE_JSON_VERSIONS = (1, 2, 3)

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
# p_mastered, attempts, last event time (us), attempts unmastered, error streak, flags
_SKILL = struct.Struct("<dIqIIB")
_MASTERED, _STRUGGLING, _REVIEW_DUE, _HAS_TIME, _HAS_OVERRIDE = 1, 2, 4, 8, 16
_OVERRIDE = struct.Struct("<dq")  # p_mastered, at (us)
_CHANGE = struct.Struct("<ddBI")  # p_before, p_after, level, attempts
_FLOAT = struct.Struct("<d")
_STRUGGLE = struct.Struct("<I")
_PAIR = struct.Struct("<dd")
_KIND = struct.Struct("<c")
_ERASED = struct.Struct("<?q")  # set, time (us)
_LEVELS = tuple(Level)  # stored by position: only ever append levels
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StateFormatError(ValueError):
    """Stored bytes that are not a learner state of a known format."""


def encode_state(state: LearnerState) -> bytes:
    return encode(state).data


class EncodedState(NamedTuple):
    """A state, its stored bytes, and the bytes of the parts that the learner's next state
    mostly shares: its skills (in `state.skills` order), its kept outputs (in `state.recent`
    order) and its profile. Encoding the next state with this one as `previous` reuses the parts
    of the values it still holds (the same objects: states are immutable) instead of encoding
    them again, which was most of the cost of a write. (A named tuple: the cheapest to make.)"""

    state: LearnerState
    data: bytes
    skill_parts: tuple[bytes, ...]
    recent_parts: tuple[bytes, ...]
    profile_part: bytes


def encode(state: LearnerState, previous: EncodedState | None = None) -> EncodedState:
    """Encode `state`; with `previous` (the learner's state as last encoded or decoded), its
    parts are reused for the values the two states share."""
    if previous is None:
        skills = tuple([_skill_bytes(skill, skill_id) for skill_id, skill in state.skills.items()])
        recent = tuple([_applied_bytes(applied) for applied in state.recent])
        profile = _profile_bytes(state.profile)
    else:
        skills = _skill_parts(state, previous)
        recent = _recent_parts(state, previous)
        same = state.profile is previous.state.profile
        profile = previous.profile_part if same else _profile_bytes(state.profile)
    out = [MAGIC, _U8.pack(FORMAT_VERSION), _U32.pack(len(state.seen_digests)), state.seen_digests]
    out += [_U16.pack(len(skills)), *skills, _U16.pack(len(recent)), *recent]
    out.append(_U16.pack(len(state.class_ids)))
    for class_id in state.class_ids:
        _put_str(out, class_id)
    erased = state.erased_before
    out.append(_ERASED.pack(erased is not None, 0 if erased is None else _micros(erased)))
    out += [_U32.pack(len(profile)), profile]
    return EncodedState(state, b"".join(out), skills, recent, profile)


def _skill_parts(state: LearnerState, previous: EncodedState) -> tuple[bytes, ...]:
    # A learner's skills keep their order (a new one comes last: `apply_attempt` copies the
    # dict), so they line up with the previous state's by position.
    items = state.skills.items()
    parts = [
        part if skill is old and skill_id == old_id else _skill_bytes(skill, skill_id)
        for (skill_id, skill), (old_id, old), part in zip(
            items, previous.state.skills.items(), previous.skill_parts, strict=False
        )
    ]  # (a skill new in this state, past the previous ones, is encoded below)
    if len(parts) < len(items):
        parts += [_skill_bytes(skill, skill_id) for skill_id, skill in list(items)[len(parts) :]]
    return tuple(parts)


def _recent_parts(state: LearnerState, previous: EncodedState) -> tuple[bytes, ...]:
    # The next state keeps the latest of the previous state's kept outputs, in their order, and
    # adds its own after them: line the two up where the next state's first one sits.
    before, parts = previous.state.recent, previous.recent_parts
    first = state.recent[0] if state.recent else None
    shift = next((i for i, applied in enumerate(before) if applied is first), len(before))
    return tuple(
        [
            parts[i] if i < len(before) and before[i] is applied else _applied_bytes(applied)
            for i, applied in enumerate(state.recent, shift)
        ]
    )


def decode_state(data: bytes) -> LearnerState:
    return decode(data).state


def decode(data: bytes) -> EncodedState:
    """The state stored as `data`, with its parts (for the JSON formats, of its binary form)."""
    try:
        if data[:1] == MAGIC:
            return _decode_binary(data)
        return encode(_decode_json(data))
    except StateFormatError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, struct.error) as exc:
        raise StateFormatError(f"undecodable learner state: {exc}") from exc


def _decode_binary(data: bytes) -> EncodedState:
    reader = _Reader(data, 1)
    (version,) = reader.unpack(_U8)
    if version != FORMAT_VERSION:
        raise StateFormatError(f"unknown learner state format {version!r}")
    seen = reader.blob(_U32)
    (count,) = reader.unpack(_U16)
    skills: dict[str, SkillState] = {}
    skill_parts = []
    for _ in range(count):
        start = reader.offset
        skill_id, skill = _read_skill(reader)
        skills[skill_id] = skill
        skill_parts.append(data[start : reader.offset])
    (count,) = reader.unpack(_U16)
    recent = []
    recent_parts = []
    for _ in range(count):
        start = reader.offset
        event_id = reader.str()
        (outputs,) = reader.unpack(_U8)
        recent.append(
            AppliedEvent(event_id, tuple(_read_output(reader, event_id) for _ in range(outputs)))
        )
        recent_parts.append(data[start : reader.offset])
    (count,) = reader.unpack(_U16)
    classes = tuple(reader.str() for _ in range(count))
    has_erased, erased = reader.unpack(_ERASED)
    profile = reader.blob(_U32)
    if reader.offset != len(data):
        raise StateFormatError("trailing bytes after the learner state")
    state = LearnerState(
        skills=skills,
        seen_digests=seen,
        recent=tuple(recent),
        profile=_decode_profile(json.loads(profile)) if profile else EMPTY_PROFILE,
        class_ids=classes,
        erased_before=_from_micros(erased) if has_erased else None,
    )
    return EncodedState(state, data, tuple(skill_parts), tuple(recent_parts), profile)


def _state(
    skills: dict[str, SkillState],
    seen: bytes,
    recent: tuple[AppliedEvent, ...],
    rare: dict[str, Any],
) -> LearnerState:
    profile = rare.get("profile")
    erased = rare.get("erased_before")
    return LearnerState(
        skills=skills,
        seen_digests=seen,
        recent=recent,
        profile=EMPTY_PROFILE if profile is None else _decode_profile(profile),
        class_ids=tuple(rare.get("classes", ())),
        erased_before=None if erased is None else datetime.fromisoformat(erased),
    )


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        values = layout.unpack_from(self.data, self.offset)
        self.offset += layout.size
        return values

    def blob(self, length: struct.Struct) -> bytes:
        (size,) = self.unpack(length)
        start, self.offset = self.offset, self.offset + size
        if self.offset > len(self.data):
            raise StateFormatError("learner state cut short")
        return self.data[start : self.offset]

    def str(self) -> str:
        return self.blob(_U16).decode()


def _put_str(out: list[bytes], text: str) -> None:
    encoded = text.encode()
    out += [_U16.pack(len(encoded)), encoded]


def _micros(when: datetime) -> int:
    return (when - _EPOCH) // timedelta(microseconds=1)


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _skill_bytes(s: SkillState, skill_id: str) -> bytes:
    out: list[bytes] = []
    flags = (
        (_MASTERED if s.mastered else 0)
        | (_STRUGGLING if s.struggling else 0)
        | (_REVIEW_DUE if s.review_due else 0)
        | (_HAS_TIME if s.last_event_time is not None else 0)
        | (_HAS_OVERRIDE if s.override is not None else 0)
    )
    when = 0 if s.last_event_time is None else _micros(s.last_event_time)
    out.append(
        _SKILL.pack(s.p_mastered, s.attempts, when, s.attempts_unmastered, s.error_streak, flags)
    )
    out.append(_skill_strings(skill_id, s.model_version, s.error_tag))
    if s.override is not None:
        o = s.override
        out.append(_OVERRIDE.pack(o.p_mastered, _micros(o.at)))
        _put_str(out, o.teacher_id)
        _put_str(out, o.reason)
        _put_str(out, o.event_id)
    return b"".join(out)


@functools.lru_cache(maxsize=4_096)  # few distinct ones: skills x parameter sets x error tags
def _skill_strings(skill_id: str, model_version: str, error_tag: str) -> bytes:
    out: list[bytes] = []
    _put_str(out, skill_id)
    _put_str(out, model_version)
    _put_str(out, error_tag)
    return b"".join(out)


def _applied_bytes(applied: AppliedEvent) -> bytes:
    out: list[bytes] = []
    _put_str(out, applied.event_id)
    out.append(_U8.pack(len(applied.outputs)))
    for output in applied.outputs:
        _put_output(out, output)
    return b"".join(out)


def _profile_bytes(profile: Profile) -> bytes:
    if profile is EMPTY_PROFILE or profile == EMPTY_PROFILE:
        return b""
    document = _encode_profile(profile)
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def _read_skill(reader: _Reader) -> tuple[str, SkillState]:
    p, attempts, when, unmastered, streak, flags = reader.unpack(_SKILL)
    skill_id, version, tag = reader.str(), reader.str(), reader.str()
    override = None
    if flags & _HAS_OVERRIDE:
        p_override, at = reader.unpack(_OVERRIDE)
        teacher, reason, event_id = reader.str(), reader.str(), reader.str()
        override = Override(p_override, teacher, reason, _from_micros(at), event_id)
    return skill_id, SkillState(
        p_mastered=p,
        attempts=attempts,
        last_event_time=_from_micros(when) if flags & _HAS_TIME else None,
        model_version=version,
        mastered=bool(flags & _MASTERED),
        attempts_unmastered=unmastered,
        struggling=bool(flags & _STRUGGLING),
        error_tag=tag,
        error_streak=streak,
        review_due=bool(flags & _REVIEW_DUE),
        override=override,
    )


def _put_output(out: list[bytes], output: Output) -> None:
    if isinstance(output, MasteryChange):
        out.append(b"u")
        _put_str(out, output.skill)
        level = _LEVELS.index(output.level)
        out.append(_CHANGE.pack(output.p_before, output.p_after, level, output.attempts))
        _put_str(out, output.model_version)
    elif isinstance(output, SkillMastered):
        out.append(b"m")
        _put_str(out, output.skill)
        out.append(_FLOAT.pack(output.p_mastered))
    elif isinstance(output, StrugglingDetected):
        out.append(b"s")
        _put_str(out, output.skill)
        _put_str(out, output.reason)
        out.append(_STRUGGLE.pack(output.attempts))
        _put_str(out, output.error_tag)
    elif isinstance(output, MasteryOverridden):
        out.append(b"o")
        _put_str(out, output.skill)
        out.append(_PAIR.pack(output.p_before, output.p_after))
        _put_str(out, output.reason)
        _put_str(out, output.teacher_id)
    else:
        out.append(b"r")
        _put_str(out, output.skill)
        out.append(_FLOAT.pack(output.p_recall))


def _read_output(reader: _Reader, cause: str) -> Output:
    (kind,) = reader.unpack(_KIND)
    skill = reader.str()
    if kind == b"u":
        p_before, p_after, level, attempts = reader.unpack(_CHANGE)
        level_ = _LEVELS[level]
        return MasteryChange(skill, p_before, p_after, level_, attempts, reader.str(), cause)
    if kind == b"m":
        return SkillMastered(skill, reader.unpack(_FLOAT)[0], cause)
    if kind == b"s":
        reason = reader.str()
        (attempts,) = reader.unpack(_STRUGGLE)
        return StrugglingDetected(skill, reason, attempts, reader.str(), cause)
    if kind == b"o":
        p_before, p_after = reader.unpack(_PAIR)
        reason, teacher = reader.str(), reader.str()
        return MasteryOverridden(skill, p_before, p_after, reason, teacher, cause)
    if kind == b"r":
        return ReviewDue(skill, reader.unpack(_FLOAT)[0], cause)
    raise StateFormatError(f"unknown output kind {kind!r}")


# --- formats 1 to 3 (JSON) -----------------------------------------------------------------


def _decode_json(data: bytes) -> LearnerState:
    document = json.loads(data)
    if document.get("v") not in READABLE_JSON_VERSIONS:
        raise StateFormatError(f"unknown learner state format {document.get('v')!r}")
    skills = {skill_id: _decode_skill(s) for skill_id, s in document["skills"].items()}
    recent = tuple(
        AppliedEvent(event_id, tuple(_decode_output(event_id, o) for o in outputs))
        for event_id, outputs in document["recent"]
    )
    seen = b"".join(event_digest(str(event_id)) for event_id in document["seen"])
    return _state(skills, seen, recent, document)


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
