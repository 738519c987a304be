"""Learners with latent ground truth, living through school days: pure, deterministic under a seed.

Each learner has, per skill, a true BKT-style state (known or not) and parameters (prior, learn,
guess, slip, forget per day) drawn around the skill's own, scaled by the learner's learning rate
(strugglers learn slowly and slip more, accelerators learn fast and start higher). An item is
answered correctly with probability
sigmoid(logit(1 - slip if known else guess) - DIFFICULTY_WEIGHT * difficulty); an unknown skill
becomes known after an attempt with probability `learn` (less while its
prerequisites are unknown; more after a resource). Known skills are forgotten over days without
practice.

A `Policy` chooses the next item from what the learner has done (never from the truth): a fixed
sequence through the skills, random order, or the recommender's options (`FollowRecommendations`,
fed by an adapter: the closed loop of `trellis.simulator.closed_loop`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np

from trellis.common.pb.events.v1 import envelope_pb2
from trellis.simulator.district import DEFAULT_START, District, Item, Learner, Skill

DIFFICULTY_WEIGHT = 0.6
ERROR_TAGS = ("computation", "sign-error", "common-denominator", "place-value", "misread")
SYSTEM = "trellis-simulator"


@dataclass(frozen=True)
class BehaviourConfig:
    days: int = 28
    start: datetime = DEFAULT_START  # timezone-aware (UTC)
    policy: str = "fixed"  # "fixed" or "random"
    session_rate: float = 0.7  # chance of a session on a school day
    late_joiners: float = 0.1
    gaps: float = 0.1  # learners with a gap of one to three weeks
    offline_devices: float = 0.05  # learners whose device sends some sessions hours or days late
    resource_rate: float = 0.2
    goal_rate: float = 0.4
    reflection_rate: float = 0.15
    event_prefix: str = "sim-"


@dataclass(frozen=True)
class SkillTruth:
    prior: float
    learn: float
    guess: float
    slip: float
    forget: float


@dataclass(frozen=True)
class TruthRow:
    """The true state of the practiced skill around one attempt."""

    learner_id: str
    step: int  # the learner's attempt number, from 1
    event_id: str
    occurred_at: datetime
    skill_id: str
    item_id: str
    known_before: bool
    known_after: bool
    p_correct: float
    correct: bool


@dataclass(frozen=True)
class TimedEvent:
    deliver_at: datetime  # when the source sends it (later than occurred_at for offline devices)
    learner_index: int
    seq: int
    envelope: envelope_pb2.Envelope


@dataclass
class History:
    """What a policy may see: the learner's own observed attempts."""

    skills: tuple[Skill, ...]
    attempts: list[tuple[str, str, bool]] = field(default_factory=list)  # item, skill, correct
    item_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Pick:
    """The next item, and the recommendation option it was taken from, if any."""

    item: Item
    recommendation_id: str = ""
    option_index: int = 0


@dataclass(frozen=True)
class Option:
    activity_id: str
    activity_kind: str  # "item" or "resource"
    skill_id: str


@dataclass(frozen=True)
class Offer:
    recommendation_id: str
    options: tuple[Option, ...]


class Policy(Protocol):
    name: str

    def choose(
        self, history: History, district: District, rng: np.random.Generator
    ) -> Item | Pick: ...


class FixedSequence:
    """Skills in curriculum order; items in order within a skill. Moves on after three correct in
    a row or twelve attempts on the skill (teachers move classes on whatever happens)."""

    name = "fixed"

    def choose(self, history: History, district: District, rng: np.random.Generator) -> Item:
        index, streak, on_skill = 0, 0, 0
        for _, skill_id, correct in history.attempts:
            if skill_id != history.skills[index].skill_id:
                continue
            on_skill += 1
            streak = streak + 1 if correct else 0
            if (streak >= 3 or on_skill >= 12) and index + 1 < len(history.skills):
                index, streak, on_skill = index + 1, 0, 0
        items = district.items_by_skill[history.skills[index].skill_id]
        return items[on_skill % len(items)]


class RandomOrder:
    name = "random"

    def choose(self, history: History, district: District, rng: np.random.Generator) -> Item:
        skill = history.skills[int(rng.integers(0, len(history.skills)))]
        items = district.items_by_skill[skill.skill_id]
        return items[int(rng.integers(0, len(items)))]


class FollowRecommendations:
    """The closed loop: before each item the learner asks `recommend` (the recommender, through an
    adapter) and mostly takes the first item offered, sometimes another one; the choice is recorded
    as a `RecommendationChosen` event. Without an item among the options (or without an answer),
    the learner goes on with the fixed sequence."""

    name = "recommender"

    def __init__(
        self, learner: Learner, recommend: Callable[[Learner], Offer | None], first: float = 0.7
    ) -> None:
        self.learner = learner
        self.recommend = recommend
        self.first = first
        self.fallback = FixedSequence()
        self.offers = 0
        self.fallbacks = 0

    def choose(self, history: History, district: District, rng: np.random.Generator) -> Item | Pick:
        offer = self.recommend(self.learner)
        items = {i.item_id: i for i in district.items}
        options = [
            (index, option)
            for index, option in enumerate(offer.options if offer else ())
            if option.activity_kind == "item" and option.activity_id in items
        ]
        if offer is None or not options:
            self.fallbacks += 1
            return self.fallback.choose(history, district, rng)
        self.offers += 1
        if rng.random() < self.first or len(options) == 1:
            index, option = options[0]
        else:
            index, option = options[int(rng.integers(1, len(options)))]
        return Pick(items[option.activity_id], offer.recommendation_id, index)


POLICIES: dict[str, type[FixedSequence] | type[RandomOrder]] = {
    "fixed": FixedSequence,
    "random": RandomOrder,
}


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def p_correct(truth: SkillTruth, known: bool, difficulty: float) -> float:
    base = 1.0 - truth.slip if known else truth.guess
    return sigmoid(logit(base) - DIFFICULTY_WEIGHT * difficulty)


def learner_truth(
    learner: Learner, skills: Sequence[Skill], rng: np.random.Generator
) -> dict[str, SkillTruth]:
    truths = {}
    for s in skills:
        slip = s.slip + (0.05 if learner.kind == "struggler" else 0.0)
        truths[s.skill_id] = SkillTruth(
            prior=float(np.clip(s.prior + learner.prior_shift + rng.normal(0, 0.05), 0.01, 0.9)),
            learn=float(
                np.clip(s.learn * learner.learning_rate * math.exp(rng.normal(0, 0.2)), 0.005, 0.8)
            ),
            guess=s.guess,
            slip=slip,
            forget=s.forget,
        )
    return truths


def _timestamp(envelope: envelope_pb2.Envelope, when: datetime) -> None:
    envelope.occurred_at.FromDatetime(when)


class LearnerRun:
    """One learner over the simulated days: yields events in the order they occur."""

    def __init__(
        self,
        district: District,
        learner: Learner,
        behaviour: BehaviourConfig,
        policy: Policy | None = None,
    ) -> None:
        self.district = district
        self.learner = learner
        self.behaviour = behaviour
        self.rng = np.random.default_rng([district.config.seed, 1, learner.index])
        self.skills = district.skills_of_grade(learner.grade)
        self.truth = learner_truth(learner, self.skills, self.rng)
        self.known = {s: bool(self.rng.random() < t.prior) for s, t in self.truth.items()}
        self.policy: Policy = policy or POLICIES[behaviour.policy]()
        self.history = History(self.skills)
        self.truth_rows: list[TruthRow] = []
        self._seq = 0
        self._step = 0

    def _envelope(self, when: datetime, actor: int = 1) -> envelope_pb2.Envelope:
        self._seq += 1
        learner = self.learner
        envelope = envelope_pb2.Envelope(
            event_id=f"{self.behaviour.event_prefix}{learner.learner_id}-{self._seq:05d}",
            learner_id=learner.learner_id,
            school_id=learner.school_id,
            class_id=learner.class_id,
            source=envelope_pb2.Source(system=SYSTEM, actor=actor),  # type: ignore[arg-type]
        )
        _timestamp(envelope, when)
        return envelope

    def _schedule(self) -> tuple[int, tuple[int, int], bool]:
        b, rng = self.behaviour, self.rng
        join = int(rng.integers(1, max(2, b.days // 2))) if rng.random() < b.late_joiners else 0
        gap = (0, 0)
        if rng.random() < b.gaps and b.days > 10:
            begin = int(rng.integers(join, max(join + 1, b.days - 7)))
            gap = (begin, begin + int(rng.integers(7, 22)))
        return join, gap, bool(rng.random() < b.offline_devices)

    def events(self) -> Iterator[TimedEvent]:
        b, rng, learner = self.behaviour, self.rng, self.learner
        join, gap, offline = self._schedule()
        class_period = int(learner.class_id.encode().hex(), 16) % 6
        first = True
        last_day = join
        for day in range(join, b.days):
            date = b.start + timedelta(days=day)
            if date.weekday() >= 5 or gap[0] <= day < gap[1] or rng.random() >= b.session_rate:
                continue
            self._forget(day - last_day)
            last_day = day
            start = date + timedelta(hours=8 + class_period, minutes=int(rng.integers(0, 40)))
            delay = (
                timedelta(hours=float(rng.uniform(2, 72)))
                if offline and rng.random() < 0.3
                else timedelta(0)
            )
            for when, envelope in self._session(start, first):
                yield TimedEvent(when + delay, learner.index, self._seq, envelope)
            first = False

    def _forget(self, days: int) -> None:
        if days <= 0:
            return
        for skill_id, known in self.known.items():
            forget = self.truth[skill_id].forget
            if known and forget > 0 and self.rng.random() < 1 - (1 - forget) ** days:
                self.known[skill_id] = False

    def _session(
        self, start: datetime, first: bool
    ) -> Iterator[tuple[datetime, envelope_pb2.Envelope]]:
        b, rng, learner = self.behaviour, self.rng, self.learner
        when = start
        if first:
            yield from self._profile(when)
            when += timedelta(seconds=30)
        boost = 0.0
        next_pick = self._pick()
        if rng.random() < b.resource_rate:
            envelope, boost, minutes = self._resource(when, next_pick.item.skill_id)
            yield when, envelope
            when += timedelta(minutes=minutes)
        n_items = int(rng.integers(5, 13))
        if "reduced_item_count" in learner.accommodations:
            n_items = max(3, n_items // 2)
        correct_count = 0
        for i in range(n_items):
            pick = next_pick if i == 0 else self._pick()
            item = pick.item
            if pick.recommendation_id:
                envelope = self._envelope(when)
                envelope.recommendation_chosen.recommendation_id = pick.recommendation_id
                envelope.recommendation_chosen.option_index = pick.option_index
                envelope.recommendation_chosen.activity_id = item.item_id
                yield when, envelope
            envelope, seconds, correct = self._attempt(when, item, boost)
            boost = 0.0
            correct_count += correct
            yield when, envelope
            when += timedelta(seconds=seconds + float(rng.uniform(5, 30)))
        if rng.random() < b.reflection_rate:
            envelope = self._envelope(when)
            share = correct_count / n_items
            envelope.reflection_submitted.reflection_id = f"refl-{envelope.event_id}"
            envelope.reflection_submitted.skill_id = item.skill_id
            envelope.reflection_submitted.text = (
                "I think I get it now." if share > 0.6 else "This was hard, I need more practice."
            )
            envelope.reflection_submitted.confidence = round(
                float(np.clip(share + rng.normal(0, 0.15), 0, 1)), 2
            )
            yield when, envelope

    def _pick(self) -> Pick:
        choice = self.policy.choose(self.history, self.district, self.rng)
        return choice if isinstance(choice, Pick) else Pick(choice)

    def _profile(self, when: datetime) -> Iterator[tuple[datetime, envelope_pb2.Envelope]]:
        learner, rng = self.learner, self.rng
        envelope = self._envelope(when)
        envelope.interest_declared.tags.extend(learner.interests)
        yield when, envelope
        envelope = self._envelope(when)
        envelope.preference_set.modality = learner.modality
        envelope.preference_set.pace = {"struggler": "slower", "accelerator": "faster"}.get(
            learner.kind, "steady"
        )
        yield when, envelope
        if learner.accommodations:
            envelope = self._envelope(when, actor=2)
            envelope.accommodation_set.accommodations.extend(learner.accommodations)
            yield when, envelope
        if rng.random() < self.behaviour.goal_rate:
            goal = self.skills[-1]
            envelope = self._envelope(when)
            envelope.goal_set.goal_id = f"goal-{learner.learner_id}-1"
            envelope.goal_set.skill_id = goal.skill_id
            envelope.goal_set.description = f"Master {goal.name.lower()}"
            envelope.goal_set.target_date = (
                (self.behaviour.start + timedelta(days=self.behaviour.days)).date().isoformat()
            )
            yield when, envelope

    def _resource(
        self, when: datetime, skill_id: str
    ) -> tuple[envelope_pb2.Envelope, float, float]:
        learner, rng = self.learner, self.rng
        resources = self.district.resources_by_skill[skill_id]
        matching = [
            r
            for r in resources
            if set(r.interest_tags) & set(learner.interests) or r.modality == learner.modality
        ]
        pool = matching or list(resources)
        resource = pool[int(rng.integers(0, len(pool)))]
        completion = round(float(rng.beta(4 if matching else 2, 2)), 3)
        envelope = self._envelope(when)
        envelope.resource_engaged.resource_id = resource.resource_id
        envelope.resource_engaged.seconds = round(resource.minutes * 60 * completion, 1)
        envelope.resource_engaged.completion = completion
        boost = 0.5 * completion * self.truth[skill_id].learn
        return envelope, boost, resource.minutes * completion

    def _attempt(
        self, when: datetime, item: Item, boost: float
    ) -> tuple[envelope_pb2.Envelope, float, bool]:
        learner, rng = self.learner, self.rng
        skill_id = item.skill_id
        truth = self.truth[skill_id]
        before = {s: self.known[s] for s in item.skill_ids}
        known_before = all(before.values())  # multi-skill items: every skill is needed
        p = p_correct(truth, known_before, item.difficulty)
        correct = bool(rng.random() < p)
        for s in item.skill_ids:
            if not before[s]:
                prerequisites = self.district.skill_by_id[s].prerequisite_ids
                ready = all(self.known.get(q, True) for q in prerequisites)
                p_learn = self.truth[s].learn * (1.0 if ready else 0.3) + boost
                self.known[s] = bool(rng.random() < p_learn)
        self._step += 1
        count = self.history.item_counts.get(item.item_id, 0) + 1
        self.history.item_counts[item.item_id] = count
        self.history.attempts.append((item.item_id, skill_id, correct))
        seconds = float(rng.lognormal(math.log(35 if known_before else 55), 0.4))
        if "extended_time" in learner.accommodations:
            seconds *= 1.5
        envelope = self._envelope(when)
        attempt = envelope.item_attempted
        attempt.item_id = item.item_id
        attempt.skill_ids.extend(item.skill_ids)
        attempt.correct = correct
        attempt.attempt_number = count
        attempt.hints_used = int(rng.poisson(0.1 if known_before else 0.7))
        attempt.duration_seconds = round(seconds, 1)
        if not correct and rng.random() < 0.6:
            # Each learner has a habitual error on a skill: repeated tags mark strugglers.
            habitual = ERROR_TAGS[(learner.index + len(skill_id)) % len(ERROR_TAGS)]
            attempt.error_tag = (
                habitual if rng.random() < 0.7 else ERROR_TAGS[int(rng.integers(0, 5))]
            )
        if self.policy.name == "fixed":
            attempt.assignment_id = f"asg-{learner.class_id}-{skill_id.rsplit('.', 1)[-1]}"
        else:
            attempt.self_chosen = True
        for s in item.skill_ids:  # one row per skill of the item (and of the export)
            self.truth_rows.append(
                TruthRow(
                    learner_id=learner.learner_id,
                    step=self._step,
                    event_id=envelope.event_id,
                    occurred_at=when,
                    skill_id=s,
                    item_id=item.item_id,
                    known_before=before[s],
                    known_after=self.known[s],
                    p_correct=p,
                    correct=correct,
                )
            )
        return envelope, seconds, correct
