"""Bayesian Knowledge Tracing of one learner: immutable state and pure functions over it.

No I/O, no clock, no protobuf. The stream adapter loads a `LearnerState`, calls `apply_attempt`
(or `apply_override`, `apply_tick`) with the event's time as `now`, saves the new state and
publishes the outputs. Replaying the same events in the same order gives the same states and the
same outputs, bit for bit.

Standard BKT per skill, with probability `p` that the skill is mastered before the attempt:

    recall at time now       = p_last (1 - forget) ** days since the last practice   (decay)
    posterior given correct  = p (1 - slip) / (p (1 - slip) + (1 - p) guess)
    posterior given wrong    = p slip / (p slip + (1 - p) (1 - guess))
    posterior given score s  = s posterior(correct) + (1 - s) posterior(wrong)   (partial credit)
    after the attempt        = posterior + (1 - posterior) learn

`forget` is a rate *per day without practice* (the catalog's `SkillParameters.forget`): between
two attempts no learning happens, so BKT's forget transition applied once per day gives the
geometric decay above; within an attempt sequence BKT runs without forgetting (as pyBKT does by
default). The decayed value is the prior of the next attempt, and drives "review due".

An item that exercises several skills updates each of them with the same outcome, each with its
own parameters. The rules for levels, struggling and teacher overrides are documented with their
constants below and in `docs/mastery-model.md`.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum

#: P(mastered) from which a skill counts as mastered, unless the skill sets its own (DESIGN §4).
MASTERY_THRESHOLD = 0.95
#: P(mastered) from which a practiced skill counts as familiar.
FAMILIAR_THRESHOLD = 0.7
#: A mastered skill whose recall (decayed P(mastered)) falls below this is due for review.
REVIEW_THRESHOLD = 0.8
#: Attempts on a skill without reaching mastery after which the learner counts as struggling.
STRUGGLING_ATTEMPTS = 10
#: Consecutive wrong answers on a skill with the same error tag that count as struggling.
REPEATED_ERROR_LIMIT = 3
#: A wrong answer is a score below this (partial credit counts as correct from here).
CORRECT_FROM = 0.5
#: A teacher override stands until the model, run from the teacher's value over the evidence
#: that followed, differs from that value by more than this (see `apply_attempt`).
OVERRIDE_CONTRADICTION = 0.5

SECONDS_PER_DAY = 86_400.0

#: How many applied event ids a learner's state remembers for deduplication, as 8-byte digests
#: (`event_digest`: 8,000 bytes at most). Kafka delivery is at-least-once: after a crash or a
#: rebalance the worker re-reads every event since the last committed offset (Faust commits every
#: 2.8 s or 10,000 events), which for one learner is a handful of events; 1,000 also absorbs a
#: client that re-sends an old batch, as long as the learner has made fewer than 1,000 attempts
#: since. An id older than that is forgotten and would be counted again.
SEEN_EVENT_IDS_LIMIT = 1_000
#: Bytes of one event id's digest in the dedup window. Two different ids of one learner collide
#: with probability about 1,000 / 2**64 per event (the later one would be taken for a duplicate).
DIGEST_BYTES = 8

#: How many reflections a learner's profile keeps (the most recent; older ones stay in the log).
REFLECTIONS_LIMIT = 20
#: How many teacher pins a learner's profile keeps (the most recent, one per activity).
PINS_LIMIT = 50

#: How many of the most recent events keep their outputs, so that a re-read duplicate re-sends
#: exactly the outputs it produced the first time (their ids are deterministic, so consumers
#: drop the copies). No output depends on it: the worker stores a batch's outputs before its
#: states (see `trellis.mastery.stream.agents`), so a crash never leaves a state saved whose
#: outputs are not; the copies only help a subscriber that missed the first ones. Older
#: duplicates are dropped without outputs. Small, because the state is rewritten on each change.
RECENT_OUTPUTS_LIMIT = 8


class InvalidAttempt(ValueError):
    """An attempt that the model cannot apply (no id, a score outside [0, 1])."""


@dataclass(frozen=True, slots=True)
class BktParameters:
    """Per-skill BKT parameters; `version` names the parameter set (state records it).

    `forget` is per day without practice. `mastery_threshold` comes from the catalog's skill
    record (0 there means the default).
    """

    prior: float = 0.3
    learn: float = 0.1
    guess: float = 0.2
    slip: float = 0.1
    forget: float = 0.0
    version: str = "default-v1"
    mastery_threshold: float = MASTERY_THRESHOLD

    def __post_init__(self) -> None:
        for name in ("prior", "learn", "forget"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        # Strictly inside (0, 1): both posteriors then have a positive denominator for every p.
        for name in ("guess", "slip", "mastery_threshold"):
            value = getattr(self, name)
            if not (0.0 < value < 1.0):
                raise ValueError(f"{name} must be in (0, 1), got {value!r}")


DEFAULT = BktParameters()

ParamsForSkill = Callable[[str], BktParameters]


class Level(Enum):
    NOT_STARTED = "not_started"
    PRACTICING = "practicing"
    FAMILIAR = "familiar"
    MASTERED = "mastered"
    REVIEW_DUE = "review_due"


def level_for(p_mastered: float, attempts: int, threshold: float = MASTERY_THRESHOLD) -> Level:
    if attempts == 0:
        return Level.NOT_STARTED
    if p_mastered >= threshold:
        return Level.MASTERED
    if p_mastered >= FAMILIAR_THRESHOLD:
        return Level.FAMILIAR
    return Level.PRACTICING


@dataclass(frozen=True, slots=True)
class Attempt:
    """An answered item, as the model sees it: which skills, how well (score in [0, 1]), and the
    source's error tag for a wrong answer ("" when none)."""

    event_id: str
    skill_ids: tuple[str, ...]
    score: float
    error_tag: str = ""

    def __post_init__(self) -> None:
        if not self.event_id:
            raise InvalidAttempt("attempt has no event id")
        if not (math.isfinite(self.score) and 0.0 <= self.score <= 1.0):
            raise InvalidAttempt(f"score must be in [0, 1], got {self.score!r}")


@dataclass(frozen=True, slots=True)
class Override:
    """A teacher's setting of P(mastered): the value, who (pseudonymous id), why, when."""

    p_mastered: float
    teacher_id: str
    reason: str
    at: datetime
    event_id: str


@dataclass(frozen=True, slots=True)
class TeacherOverride:
    """A `TeacherOverride` event, as the model sees it."""

    event_id: str
    skill_id: str
    p_mastered: float
    teacher_id: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.event_id:
            raise InvalidAttempt("override has no event id")
        if not self.skill_id:
            raise InvalidAttempt("override names no skill")
        if not (math.isfinite(self.p_mastered) and 0.0 <= self.p_mastered <= 1.0):
            raise InvalidAttempt(f"p_mastered must be in [0, 1], got {self.p_mastered!r}")


@dataclass(frozen=True, slots=True)
class SkillState:
    # The model's P(mastered) right after the latest attempt (or override): BKT's state.
    p_mastered: float
    attempts: int
    # Event time of the latest attempt on this skill (never the wall clock).
    last_event_time: datetime | None = None
    # Parameter set that produced `p_mastered`.
    model_version: str = DEFAULT.version
    # Whether `effective` reached the skill's threshold at the latest update.
    mastered: bool = False
    # Attempts since the skill was last mastered (or ever, if never).
    attempts_unmastered: int = 0
    struggling: bool = False
    # Error tag of the current run of wrong answers, and its length.
    error_tag: str = ""
    error_streak: int = 0
    # A ReviewDue was emitted since the latest attempt.
    review_due: bool = False
    # A standing teacher override; `p_mastered` then runs on from the teacher's value.
    override: Override | None = None

    @property
    def effective(self) -> float:
        """P(mastered) as reported: the teacher's value while an override stands."""
        return self.p_mastered if self.override is None else self.override.p_mastered

    @property
    def level(self) -> Level:
        if self.attempts == 0 and self.override is None:
            return Level.NOT_STARTED
        if self.review_due:
            return Level.REVIEW_DUE
        if self.mastered:
            return Level.MASTERED
        if self.effective >= FAMILIAR_THRESHOLD:
            return Level.FAMILIAR
        return Level.PRACTICING


@dataclass(frozen=True, slots=True)
class MasteryChange:
    skill: str
    p_before: float
    p_after: float
    level: Level
    attempts: int
    model_version: str
    cause_event_id: str


@dataclass(frozen=True, slots=True)
class SkillMastered:
    """The skill crossed the mastery threshold with this attempt."""

    skill: str
    p_mastered: float
    cause_event_id: str


@dataclass(frozen=True, slots=True)
class StrugglingDetected:
    """`reason`: "many_attempts" (with `attempts`) or "repeated_error" (with `error_tag`)."""

    skill: str
    reason: str
    attempts: int
    error_tag: str
    cause_event_id: str


@dataclass(frozen=True, slots=True)
class MasteryOverridden:
    skill: str
    p_before: float
    p_after: float
    reason: str
    teacher_id: str
    cause_event_id: str


@dataclass(frozen=True, slots=True)
class ReviewDue:
    """A mastered skill's recall fell below `REVIEW_THRESHOLD` (noticed at the cause event)."""

    skill: str
    p_recall: float
    cause_event_id: str


Output = MasteryChange | SkillMastered | StrugglingDetected | MasteryOverridden | ReviewDue


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    event_id: str
    outputs: tuple[Output, ...]


@dataclass(frozen=True, slots=True)
class Goal:
    goal_id: str
    skill_id: str = ""
    description: str = ""
    target_date: str = ""


@dataclass(frozen=True, slots=True)
class Reflection:
    reflection_id: str
    text: str = ""
    skill_id: str = ""
    confidence: float | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Pin:
    """A teacher's pin (`ActivityAssigned`): the activity comes first in recommendations."""

    activity_id: str
    activity_kind: str = ""
    skill_id: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class Profile:
    """What a learner said about themselves and what their teachers pinned.

    goals: one per goal id, in the order first set (a later `GoalSet` with the same id replaces
    it in place); reflections: the last `REFLECTIONS_LIMIT`, oldest first; interests and
    accommodations: the latest declaration replaces the earlier one (both events carry the whole
    list); modality and pace: the latest non-empty value of each; pins: one per activity, the
    most recent last, at most `PINS_LIMIT`.
    """

    goals: tuple[Goal, ...] = ()
    reflections: tuple[Reflection, ...] = ()
    interests: tuple[str, ...] = ()
    modality: str = ""
    pace: str = ""
    accommodations: tuple[str, ...] = ()
    pins: tuple[Pin, ...] = ()


EMPTY_PROFILE = Profile()


@dataclass(frozen=True, slots=True)
class SetGoal:
    goal: Goal


@dataclass(frozen=True, slots=True)
class SubmitReflection:
    reflection: Reflection


@dataclass(frozen=True, slots=True)
class DeclareInterests:
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetPreference:
    modality: str = ""
    pace: str = ""


@dataclass(frozen=True, slots=True)
class SetAccommodations:
    accommodations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AssignActivity:
    pin: Pin


ProfileChange = (
    SetGoal
    | SubmitReflection
    | DeclareInterests
    | SetPreference
    | SetAccommodations
    | AssignActivity
)


@dataclass(frozen=True, slots=True)
class LearnerState:
    """One learner's mastery and profile. Treat as immutable: the functions below return new
    states.

    `seen_digests` holds the digests of the last `SEEN_EVENT_IDS_LIMIT` applied event ids, oldest
    first, `DIGEST_BYTES` each, back to back (compact to store, and one `find` to search);
    `recent` the outputs of the last `RECENT_OUTPUTS_LIMIT` of them (events with outputs only);
    `class_ids` every class named by the learner's events (sorted), which `GetClassMastery`
    reads; `erased_before` the time of the learner's latest erasure when this state began after
    one (events up to that time stay erased, see `erasure_covers`).
    """

    skills: Mapping[str, SkillState] = field(default_factory=dict)
    seen_digests: bytes = b""
    recent: tuple[AppliedEvent, ...] = ()
    profile: Profile = EMPTY_PROFILE
    class_ids: tuple[str, ...] = ()
    erased_before: datetime | None = None

    def skill(self, skill_id: str, params: BktParameters) -> SkillState:
        """State of a skill; a skill without attempts starts at the prior of its parameters."""
        current = self.skills.get(skill_id)
        if current is None:
            return SkillState(p_mastered=params.prior, attempts=0, model_version=params.version)
        return current

    def has_seen(self, event_id: str) -> bool:
        window, digest = self.seen_digests, event_digest(event_id)
        found = window.find(digest)
        while found >= 0 and found % DIGEST_BYTES:  # a match across two digests is none
            found = window.find(digest, found + 1)
        return found >= 0

    def seen_after(self, event_id: str) -> bytes:
        """The dedup window once `event_id` is applied: its digest last, the oldest dropped."""
        window = self.seen_digests + event_digest(event_id)
        return window[-SEEN_EVENT_IDS_LIMIT * DIGEST_BYTES :]


@functools.lru_cache(maxsize=1_024)  # asked twice per event: seen before? then remembered
def event_digest(event_id: str) -> bytes:
    """The `DIGEST_BYTES`-byte digest of an event id that the dedup window keeps."""
    return hashlib.blake2b(event_id.encode(), digest_size=DIGEST_BYTES).digest()


EMPTY = LearnerState()


def posterior(p: float, score: float, params: BktParameters) -> float:
    """P(mastered | outcome) before learning; `score`: 1.0 correct, 0.0 wrong, between: partial."""
    if_correct = p * (1.0 - params.slip) / (p * (1.0 - params.slip) + (1.0 - p) * params.guess)
    if_wrong = p * params.slip / (p * params.slip + (1.0 - p) * (1.0 - params.guess))
    return _clamp(score * if_correct + (1.0 - score) * if_wrong)


def transition(p: float, params: BktParameters) -> float:
    """The chance to learn between this attempt and the next."""
    return _clamp(p + (1.0 - p) * params.learn)


def update(p: float, score: float, params: BktParameters) -> float:
    """P(mastered) after one attempt with this score."""
    return transition(posterior(p, score, params), params)


def recall(skill: SkillState, params: BktParameters, now: datetime) -> float:
    """P(mastered) at `now`: the state after the latest attempt, decayed by the days since."""
    if skill.last_event_time is None or params.forget == 0.0:
        return skill.p_mastered
    days = max(0.0, (now - skill.last_event_time).total_seconds() / SECONDS_PER_DAY)
    return _clamp(skill.p_mastered * (1.0 - params.forget) ** days)


def p_correct(p_mastered: float, params: BktParameters) -> float:
    """BKT's probability of a correct answer from a learner with this P(mastered)."""
    return p_mastered * (1.0 - params.slip) + (1.0 - p_mastered) * params.guess


def apply_attempt(
    state: LearnerState,
    attempt: Attempt,
    params_for_skill: ParamsForSkill,
    now: datetime,
) -> tuple[LearnerState, tuple[Output, ...]]:
    """Apply one attempt: the new state and its outputs, per skill in the given order: a
    `MasteryChange`, then `SkillMastered` if the skill reached its threshold, then
    `StrugglingDetected` if this attempt made it struggle; after them, `ReviewDue` for the
    learner's other skills whose recall fell below `REVIEW_THRESHOLD` by `now`.

    `now` is the attempt's event time. An event id seen before changes nothing: the state comes
    back unchanged (the same object) with the outputs of the first time, if still remembered.

    Overrides: while a teacher override stands, the model keeps running from the teacher's value
    (`p_mastered`) and the reported value stays the teacher's; the override is lifted when the
    model differs from it by more than `OVERRIDE_CONTRADICTION` (e.g. a "mastered" 0.99 with
    the defaults is lifted by the third wrong answer in a row), and the model's value is reported
    from then on.
    """
    if state.has_seen(attempt.event_id):
        return state, _first_outputs(state, attempt.event_id)

    skills = dict(state.skills)
    outputs: list[Output] = []
    practiced = dict.fromkeys(attempt.skill_ids)  # each skill once, in the given order
    for skill_id in practiced:
        params = params_for_skill(skill_id)
        before = state.skill(skill_id, params)
        after, produced = _attempt_on_skill(skill_id, before, attempt, params, now)
        skills[skill_id] = after
        outputs += produced

    for skill_id, skill in state.skills.items():
        if skill.mastered and skill_id not in practiced:  # (most skills stop here, cheaply)
            due = _review_due(skill_id, skill, params_for_skill, now, attempt.event_id)
            if due is not None:
                skills[skill_id], review = due
                outputs.append(review)
    return _remember(state, skills, attempt.event_id, tuple(outputs))


def apply_tick(
    state: LearnerState, event_id: str, params_for_skill: ParamsForSkill, now: datetime
) -> tuple[LearnerState, tuple[Output, ...]]:
    """A `ReviewTick` at `now`: `ReviewDue` for every skill whose recall fell below threshold."""
    if state.has_seen(event_id):
        return state, _first_outputs(state, event_id)
    skills = dict(state.skills)
    outputs: list[Output] = []
    for skill_id, skill in state.skills.items():
        due = _review_due(skill_id, skill, params_for_skill, now, event_id)
        if due is not None:
            skills[skill_id], review = due
            outputs.append(review)
    return _remember(state, skills, event_id, tuple(outputs))


def apply_override(
    state: LearnerState,
    override: TeacherOverride,
    params_for_skill: ParamsForSkill,
    now: datetime,
) -> tuple[LearnerState, tuple[Output, ...]]:
    """A teacher sets P(mastered) of a skill: it is reported from now on (audited with who, when
    and why in the state and in `MasteryOverridden`), and the model continues from that value.
    Reaching the threshold this way emits `SkillMastered` too; struggling and review are reset.
    """
    if state.has_seen(override.event_id):
        return state, _first_outputs(state, override.event_id)
    params = params_for_skill(override.skill_id)
    before = state.skill(override.skill_id, params)
    p_before = before.effective
    mastered = override.p_mastered >= params.mastery_threshold
    after = replace(
        before,
        p_mastered=override.p_mastered,
        last_event_time=_later(before.last_event_time, now),
        mastered=mastered,
        attempts_unmastered=0 if mastered else before.attempts_unmastered,
        struggling=False if mastered else before.struggling,
        review_due=False,
        override=Override(
            override.p_mastered, override.teacher_id, override.reason, now, override.event_id
        ),
    )
    outputs: list[Output] = [
        MasteryOverridden(
            override.skill_id,
            p_before,
            override.p_mastered,
            override.reason,
            override.teacher_id,
            override.event_id,
        )
    ]
    if mastered and not before.mastered:
        outputs.append(SkillMastered(override.skill_id, override.p_mastered, override.event_id))
    skills = dict(state.skills)
    skills[override.skill_id] = after
    return _remember(state, skills, override.event_id, tuple(outputs))


def _attempt_on_skill(
    skill_id: str, before: SkillState, attempt: Attempt, params: BktParameters, now: datetime
) -> tuple[SkillState, list[Output]]:
    p_model = update(recall(before, params, now), attempt.score, params)
    override = before.override
    if override is not None and abs(p_model - override.p_mastered) > OVERRIDE_CONTRADICTION:
        override = None  # the evidence contradicts the teacher strongly: the model takes over
    effective = p_model if override is None else override.p_mastered
    mastered = effective >= params.mastery_threshold
    attempts = before.attempts + 1
    unmastered = 0 if mastered else before.attempts_unmastered + 1

    wrong = attempt.score < CORRECT_FROM
    if not wrong:
        tag, streak = "", 0
    elif not attempt.error_tag:
        tag, streak = before.error_tag, before.error_streak
    elif attempt.error_tag == before.error_tag:
        tag, streak = before.error_tag, before.error_streak + 1
    else:
        tag, streak = attempt.error_tag, 1

    struggling = before.struggling and not mastered
    alerts: list[Output] = []
    if unmastered == STRUGGLING_ATTEMPTS:
        alerts.append(
            StrugglingDetected(skill_id, "many_attempts", unmastered, "", attempt.event_id)
        )
        struggling = True
    if wrong and attempt.error_tag and streak == REPEATED_ERROR_LIMIT:
        alerts.append(StrugglingDetected(skill_id, "repeated_error", streak, tag, attempt.event_id))
        struggling = True
    after = SkillState(
        p_mastered=p_model,
        attempts=attempts,
        last_event_time=_later(before.last_event_time, now),
        model_version=params.version,
        mastered=mastered,
        attempts_unmastered=unmastered,
        struggling=struggling,
        error_tag=tag,
        error_streak=streak,
        review_due=False,
        override=override,
    )
    outputs: list[Output] = [
        MasteryChange(
            skill=skill_id,
            p_before=before.effective,
            p_after=effective,
            level=after.level,
            attempts=attempts,
            model_version=params.version,
            cause_event_id=attempt.event_id,
        )
    ]
    if mastered and not before.mastered:
        outputs.append(SkillMastered(skill_id, effective, attempt.event_id))
    return after, outputs + alerts


def _review_due(
    skill_id: str, skill: SkillState, params_for_skill: ParamsForSkill, now: datetime, cause: str
) -> tuple[SkillState, ReviewDue] | None:
    if not skill.mastered or skill.review_due or skill.override is not None:
        return None  # (checked first: most skills stop here, without a parameter lookup)
    p_recall = recall(skill, params_for_skill(skill_id), now)
    if p_recall >= REVIEW_THRESHOLD:
        return None
    return replace(skill, review_due=True), ReviewDue(skill_id, p_recall, cause)


def apply_profile(state: LearnerState, event_id: str, change: ProfileChange) -> LearnerState:
    """Fold one profile event into the state. Profile events have no outputs; a seen event id
    changes nothing (the same object comes back)."""
    if state.has_seen(event_id):
        return state
    profile = state.profile
    if isinstance(change, SetGoal):
        goal = change.goal
        if any(g.goal_id == goal.goal_id for g in profile.goals):
            goals = tuple(goal if g.goal_id == goal.goal_id else g for g in profile.goals)
        else:
            goals = (*profile.goals, goal)
        profile = replace(profile, goals=goals)
    elif isinstance(change, SubmitReflection):
        reflections = (*profile.reflections, change.reflection)[-REFLECTIONS_LIMIT:]
        profile = replace(profile, reflections=reflections)
    elif isinstance(change, DeclareInterests):
        profile = replace(profile, interests=tuple(dict.fromkeys(change.tags)))
    elif isinstance(change, SetPreference):
        profile = replace(
            profile,
            modality=change.modality or profile.modality,
            pace=change.pace or profile.pace,
        )
    elif isinstance(change, SetAccommodations):
        profile = replace(profile, accommodations=tuple(dict.fromkeys(change.accommodations)))
    else:
        pin = change.pin
        others = tuple(p for p in profile.pins if p.activity_id != pin.activity_id)
        profile = replace(profile, pins=(*others, pin)[-PINS_LIMIT:])
    return replace(
        state,
        profile=profile,
        seen_digests=state.seen_after(event_id),
    )


def note_class(state: LearnerState, class_id: str) -> LearnerState:
    """The state with `class_id` among the learner's classes (the same object if already there
    or empty)."""
    if not class_id or class_id in state.class_ids:
        return state
    return replace(state, class_ids=tuple(sorted((*state.class_ids, class_id))))


def erasure_covers(erased_at: datetime | None, event_time: datetime) -> bool:
    """Whether an event of an erased learner falls under the erasure: it happened at or before
    the erasure request (a late or re-sent old event). Later events start a new state."""
    return erased_at is not None and event_time <= erased_at


def _first_outputs(state: LearnerState, event_id: str) -> tuple[Output, ...]:
    for applied in state.recent:
        if applied.event_id == event_id:
            return applied.outputs
    return ()


def _remember(
    state: LearnerState, skills: dict[str, SkillState], event_id: str, outputs: tuple[Output, ...]
) -> tuple[LearnerState, tuple[Output, ...]]:
    # Built directly: `dataclasses.replace` costs several times more, on every event.
    new_state = LearnerState(
        skills=skills,
        seen_digests=state.seen_after(event_id),
        recent=(*state.recent, AppliedEvent(event_id, outputs))[-RECENT_OUTPUTS_LIMIT:],
        profile=state.profile,
        class_ids=state.class_ids,
        erased_before=state.erased_before,
    )
    return new_state, outputs


def _later(last: datetime | None, now: datetime) -> datetime:
    return now if last is None else max(last, now)


def _clamp(p: float) -> float:
    # Rounding can leave a hair outside [0, 1] at the extremes; probabilities never do.
    return min(1.0, max(0.0, p))
