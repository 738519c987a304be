"""Bayesian Knowledge Tracing of one learner: immutable state and pure functions over it.

No I/O, no clock, no protobuf. The stream adapter loads a `LearnerState`, calls `apply_attempt`
with the attempt's event time as `now`, saves the new state and publishes the outputs. Replaying
the same attempts in the same order gives the same states and the same outputs, bit for bit.

Standard BKT per skill, with probability `p` that the skill is mastered before the attempt:

    posterior given correct  = p (1 - slip) / (p (1 - slip) + (1 - p) guess)
    posterior given wrong    = p slip / (p slip + (1 - p) (1 - guess))
    posterior given score s  = s posterior(correct) + (1 - s) posterior(wrong)   (partial credit)
    after the attempt        = posterior (1 - forget) + (1 - posterior) learn

An item that exercises several skills updates each of them with the same outcome, each with its
own parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

#: P(mastered) from which a skill counts as mastered (DESIGN.md §4).
MASTERY_THRESHOLD = 0.95
#: P(mastered) from which a practiced skill counts as familiar.
FAMILIAR_THRESHOLD = 0.7

#: How many applied event ids a learner's state remembers for deduplication. Kafka delivery is
#: at-least-once: after a crash or a rebalance the worker re-reads every event since the last
#: committed offset (Faust commits every few seconds), which for one learner is a handful of events;
#: 1,000 also absorbs a client that re-sends an old batch, as long as the learner has made fewer
#: than 1,000 attempts since. An id older than that is forgotten and would be counted again.
SEEN_EVENT_IDS_LIMIT = 1_000

#: How many of the most recent events keep their outputs, so that a replayed duplicate re-sends
#: exactly the outputs it produced the first time (their ids are deterministic, so consumers
#: drop the copies). Outputs are what a crash may have lost between saving state and publishing,
#: which concerns only events since the last commit; older duplicates are dropped without outputs.
RECENT_OUTPUTS_LIMIT = 32


class InvalidAttempt(ValueError):
    """An attempt that the model cannot apply (no id, a score outside [0, 1])."""


@dataclass(frozen=True, slots=True)
class BktParameters:
    """Per-skill BKT parameters; `version` names the parameter set (state records it)."""

    prior: float = 0.3
    learn: float = 0.1
    guess: float = 0.2
    slip: float = 0.1
    forget: float = 0.0
    version: str = "default-v1"

    def __post_init__(self) -> None:
        for name in ("prior", "learn", "forget"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        # Strictly inside (0, 1): both posteriors then have a positive denominator for every p.
        for name in ("guess", "slip"):
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
    """An answered item, as the model sees it: which skills, and how well (score in [0, 1])."""

    event_id: str
    skill_ids: tuple[str, ...]
    score: float

    def __post_init__(self) -> None:
        if not self.event_id:
            raise InvalidAttempt("attempt has no event id")
        if not (math.isfinite(self.score) and 0.0 <= self.score <= 1.0):
            raise InvalidAttempt(f"score must be in [0, 1], got {self.score!r}")


@dataclass(frozen=True, slots=True)
class SkillState:
    p_mastered: float
    attempts: int
    # Event time of the latest attempt on this skill (never the wall clock).
    last_event_time: datetime | None = None
    # Parameter set that produced `p_mastered`.
    model_version: str = DEFAULT.version

    @property
    def level(self) -> Level:
        return level_for(self.p_mastered, self.attempts)


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


Output = MasteryChange | SkillMastered


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    event_id: str
    outputs: tuple[Output, ...]


@dataclass(frozen=True, slots=True)
class LearnerState:
    """One learner's mastery. Treat as immutable: the functions below return new states.

    `seen_event_ids` holds the last `SEEN_EVENT_IDS_LIMIT` applied event ids (oldest first);
    `recent` the outputs of the last `RECENT_OUTPUTS_LIMIT` of them.
    """

    skills: Mapping[str, SkillState] = field(default_factory=dict)
    seen_event_ids: tuple[str, ...] = ()
    recent: tuple[AppliedEvent, ...] = ()

    def skill(self, skill_id: str, params: BktParameters) -> SkillState:
        """State of a skill; a skill without attempts starts at the prior of its parameters."""
        current = self.skills.get(skill_id)
        if current is None:
            return SkillState(p_mastered=params.prior, attempts=0, model_version=params.version)
        return current

    def has_seen(self, event_id: str) -> bool:
        return event_id in self.seen_event_ids


EMPTY = LearnerState()


def posterior(p: float, score: float, params: BktParameters) -> float:
    """P(mastered | outcome) before learning; `score`: 1.0 correct, 0.0 wrong, between: partial."""
    if_correct = p * (1.0 - params.slip) / (p * (1.0 - params.slip) + (1.0 - p) * params.guess)
    if_wrong = p * params.slip / (p * params.slip + (1.0 - p) * (1.0 - params.guess))
    return _clamp(score * if_correct + (1.0 - score) * if_wrong)


def transition(p: float, params: BktParameters) -> float:
    """The chance to learn (and to forget) between this attempt and the next."""
    return _clamp(p * (1.0 - params.forget) + (1.0 - p) * params.learn)


def update(p: float, score: float, params: BktParameters) -> float:
    """P(mastered) after one attempt with this score."""
    return transition(posterior(p, score, params), params)


def apply_attempt(
    state: LearnerState,
    attempt: Attempt,
    params_for_skill: ParamsForSkill,
    now: datetime,
) -> tuple[LearnerState, tuple[Output, ...]]:
    """Apply one attempt: the new state and what changed (a `MasteryChange` per skill, and a
    `SkillMastered` for each skill that crossed the threshold).

    `now` is the attempt's event time. An event id seen before changes nothing: the state comes
    back unchanged (the same object) with the outputs of the first time, if still remembered.
    """
    if state.has_seen(attempt.event_id):
        for applied in state.recent:
            if applied.event_id == attempt.event_id:
                return state, applied.outputs
        return state, ()

    skills = dict(state.skills)
    outputs: list[Output] = []
    for skill_id in dict.fromkeys(attempt.skill_ids):  # each skill once, in the given order
        params = params_for_skill(skill_id)
        before = state.skill(skill_id, params)
        p_after = update(before.p_mastered, attempt.score, params)
        last_time = before.last_event_time
        after = SkillState(
            p_mastered=p_after,
            attempts=before.attempts + 1,
            last_event_time=now if last_time is None else max(last_time, now),
            model_version=params.version,
        )
        skills[skill_id] = after
        outputs.append(
            MasteryChange(
                skill=skill_id,
                p_before=before.p_mastered,
                p_after=p_after,
                level=after.level,
                attempts=after.attempts,
                model_version=params.version,
                cause_event_id=attempt.event_id,
            )
        )
        if before.p_mastered < MASTERY_THRESHOLD <= p_after:
            outputs.append(SkillMastered(skill_id, p_after, attempt.event_id))

    produced = tuple(outputs)
    new_state = LearnerState(
        skills=skills,
        seen_event_ids=(*state.seen_event_ids, attempt.event_id)[-SEEN_EVENT_IDS_LIMIT:],
        recent=(*state.recent, AppliedEvent(attempt.event_id, produced))[-RECENT_OUTPUTS_LIMIT:],
    )
    return new_state, produced


def _clamp(p: float) -> float:
    # Rounding can leave a hair outside [0, 1] at the extremes; probabilities never do.
    return min(1.0, max(0.0, p))
