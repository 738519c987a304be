"""Plain values of the recommender's pure core: the catalog graph, a learner's state and profile,
and what the policy answers. No I/O, no protobuf: adapters translate to and from these."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

DEFAULT_MASTERY_THRESHOLD = 0.95

# Levels as the mastery service names them (trellis.events.v1.MasteryLevel without the prefix).
NOT_STARTED = "not_started"
PRACTICING = "practicing"
FAMILIAR = "familiar"
MASTERED = "mastered"
REVIEW_DUE = "review_due"

# Accommodation codes (AccommodationSet) the policy honours.
EXTENDED_TIME = "extended_time"
TEXT_TO_SPEECH = "text_to_speech"
AUDIO = "audio"


@dataclass(frozen=True, slots=True)
class Skill:
    skill_id: str
    name: str = ""
    prerequisites: tuple[str, ...] = ()
    # 0: the tenant default.
    mastery_threshold: float = 0.0


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    skills: tuple[str, ...]
    difficulty: float = 0.0
    format: str = ""
    timed: bool = False


@dataclass(frozen=True, slots=True)
class Resource:
    resource_id: str
    skills: tuple[str, ...]
    interest_tags: tuple[str, ...] = ()
    modality: str = ""
    minutes: float = 0.0
    accessibility: tuple[str, ...] = ()
    title: str = ""


@dataclass(frozen=True)
class Catalog:
    """One tenant's catalog: skills with their prerequisite graph, items and resources.

    Prerequisites naming unknown skills are ignored (the catalog may arrive out of order)."""

    skills: Mapping[str, Skill]
    items: Mapping[str, Item] = field(default_factory=dict)
    resources: Mapping[str, Resource] = field(default_factory=dict)

    @staticmethod
    def of(
        skills: Iterable[Skill], items: Iterable[Item] = (), resources: Iterable[Resource] = ()
    ) -> Catalog:
        return Catalog(
            MappingProxyType({s.skill_id: s for s in skills}),
            MappingProxyType({i.item_id: i for i in items}),
            MappingProxyType({r.resource_id: r for r in resources}),
        )

    @cached_property
    def _prerequisites(self) -> dict[str, tuple[str, ...]]:
        return {
            s.skill_id: tuple(
                dict.fromkeys(p for p in s.prerequisites if p in self.skills and p != s.skill_id)
            )
            for s in self.skills.values()
        }

    def prerequisites(self, skill_id: str) -> tuple[str, ...]:
        return self._prerequisites.get(skill_id, ())

    @cached_property
    def _dependents(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {s: [] for s in self.skills}
        for skill_id in sorted(self.skills):
            for prerequisite in self.prerequisites(skill_id):
                out[prerequisite].append(skill_id)
        return {k: tuple(v) for k, v in out.items()}

    def dependents(self, skill_id: str) -> tuple[str, ...]:
        return self._dependents.get(skill_id, ())

    @cached_property
    def _ancestors(self) -> dict[str, frozenset[str]]:
        return {}

    def ancestors(self, skill_id: str) -> frozenset[str]:
        """Every skill reachable through prerequisites (the skill itself excluded); memoized, the
        catalog being immutable."""
        found = self._ancestors.get(skill_id)
        if found is None:
            found = self._ancestors[skill_id] = _reach(skill_id, self.prerequisites)
        return found

    def descendants(self, skill_id: str) -> frozenset[str]:
        return _reach(skill_id, self.dependents)

    @cached_property
    def _items_by_skill(self) -> dict[str, tuple[Item, ...]]:
        out: dict[str, list[Item]] = {}
        for item in sorted(self.items.values(), key=lambda i: i.item_id):
            for skill_id in item.skills:
                out.setdefault(skill_id, []).append(item)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def _resources_by_skill(self) -> dict[str, tuple[Resource, ...]]:
        out: dict[str, list[Resource]] = {}
        for resource in sorted(self.resources.values(), key=lambda r: r.resource_id):
            for skill_id in resource.skills:
                out.setdefault(skill_id, []).append(resource)
        return {k: tuple(v) for k, v in out.items()}

    def items_for(self, skill_id: str) -> tuple[Item, ...]:
        return self._items_by_skill.get(skill_id, ())

    def resources_for(self, skill_id: str) -> tuple[Resource, ...]:
        return self._resources_by_skill.get(skill_id, ())

    @cached_property
    def depth(self) -> Mapping[str, int]:
        """Length of the longest prerequisite chain below each skill (roots: 0)."""
        depth: dict[str, int] = {}
        for skill_id in self.topological(self.skills):
            depth[skill_id] = 1 + max((depth[p] for p in self.prerequisites(skill_id)), default=-1)
        return depth

    def topological(
        self, subset: Iterable[str], priority: Mapping[str, float] | None = None
    ) -> list[str]:
        """The skills of `subset` with every prerequisite before its dependents (prerequisites
        outside the subset are taken as done). Among ready skills: lowest priority value, then id.
        Skills on a cycle (refused by ingest, but possible in a raw log) come last, by id."""
        chosen = set(subset)
        rank = priority or {}
        waiting = {s: {p for p in self.prerequisites(s) if p in chosen} for s in chosen}
        ready = [(rank.get(s, 0.0), s) for s, pre in waiting.items() if not pre]
        heapq.heapify(ready)
        order: list[str] = []
        done: set[str] = set()
        while ready:
            _, skill_id = heapq.heappop(ready)
            order.append(skill_id)
            done.add(skill_id)
            for dependent in self.dependents(skill_id):
                pending = waiting.get(dependent)
                if pending is not None and skill_id in pending:
                    pending.discard(skill_id)
                    if not pending and dependent not in done:
                        heapq.heappush(ready, (rank.get(dependent, 0.0), dependent))
        order.extend(sorted(chosen - done))
        return order


def _reach(start: str, step: Callable[[str], tuple[str, ...]]) -> frozenset[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for neighbour in step(stack.pop()):
            if neighbour not in seen and neighbour != start:
                seen.add(neighbour)
                stack.append(neighbour)
    return frozenset(seen)


@dataclass(frozen=True, slots=True)
class SkillState:
    skill_id: str
    p_mastered: float = 0.0
    level: str = NOT_STARTED
    attempts: int = 0
    struggling: bool = False
    # A teacher set this skill's mastery: it counts as mastered for prerequisites.
    overridden: bool = False
    # Days since the learner last practised the skill; None when unknown.
    days_since_practice: float | None = None


@dataclass(frozen=True)
class LearnerState:
    skills: Mapping[str, SkillState] = field(default_factory=dict)

    @staticmethod
    def of(*states: SkillState) -> LearnerState:
        return LearnerState(MappingProxyType({s.skill_id: s for s in states}))

    def get(self, skill_id: str) -> SkillState:
        return self.skills.get(skill_id) or SkillState(skill_id)

    @property
    def is_new(self) -> bool:
        """No evidence at all: no attempts on any skill and no teacher override."""
        return not any(s.attempts > 0 or s.overridden for s in self.skills.values())


@dataclass(frozen=True, slots=True)
class Pin:
    activity_id: str
    activity_kind: str  # "item" or "resource"
    skill_id: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class Profile:
    interests: tuple[str, ...] = ()
    modality: str = ""
    accommodations: tuple[str, ...] = ()
    pins: tuple[Pin, ...] = ()
    goal_skills: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    facts: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def of(code: str, **facts: object) -> Reason:
        return Reason(code, tuple(sorted((k, _fact(v)) for k, v in facts.items())))

    def fact(self, key: str) -> str | None:
        return dict(self.facts).get(key)


def _fact(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


@dataclass(frozen=True, slots=True)
class Option:
    activity_id: str
    activity_kind: str  # "item" or "resource"
    skill_id: str
    # Item format or resource modality: with skill_id, what makes two options the same choice.
    format: str
    reasons: tuple[Reason, ...]
    explanation: str
    predicted_success: float = 0.0

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)


@dataclass(frozen=True, slots=True)
class Recommendation:
    recommendation_id: str
    options: tuple[Option, ...]
    explanation: str
    degraded: bool = False
