"""Small groups for a class: by shared need, shared interest, or mixed ability. Pure.

The rules (docs/recommender.md, "Groups"):
- need: repeatedly take the frontier skill shared by the most ungrouped learners (ties: shallower
  in the graph, then id) while at least `min_size` share it, and split them into balanced groups
  of `min_size`..`max_size`; the skill is on every member's frontier.
- interest: the same with declared interests.
- mixed: one target skill that some learners have mastered and others have not (the one giving the
  most balanced split); groups of balanced size, experts dealt first so that each group has one
  when there are enough, then the others by mastery so that abilities mix.
- learners left over join a group with room whose binding fits them (the skill is on their
  frontier, or they share the interest); if none fits they are returned in `unplaced` with
  the reason: the teacher works with them individually on their own next skill.
- a class smaller than `min_size` is one group (binding: what all members share, if anything,
  else "whole_class").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from trellis.recommender.model import Catalog, LearnerState, Profile
from trellis.recommender.policy import (
    DEFAULT_CONFIG,
    PolicyConfig,
    frontier,
    mastered_skills,
)

NEED = "need"
INTEREST = "interest"
MIXED = "mixed"
WHOLE_CLASS = "whole_class"


@dataclass(frozen=True, slots=True)
class Group:
    learner_ids: tuple[str, ...]
    binding: str
    suggested_activity_id: str
    explanation: str


@dataclass(frozen=True, slots=True)
class Grouping:
    groups: tuple[Group, ...]
    unplaced: tuple[str, ...]
    explanation: str
    unplaced_reasons: Mapping[str, str] = field(default_factory=dict)


def split_sizes(n: int, min_size: int, max_size: int) -> list[int]:
    """Balanced group sizes within [min_size, max_size] for n learners, fewest groups first.
    When no balanced split exists (e.g. 5 learners, sizes 3-4), as many full groups of max_size
    as floor(n / min_size) allows; the rest is left over (the sum is then below n)."""
    if n < min_size or n <= 0:
        return []
    for g in range(math.ceil(n / max_size), n // min_size + 1):
        base, extra = divmod(n, g)
        if min_size <= base and base + (1 if extra else 0) <= max_size:
            return [base + 1] * extra + [base] * (g - extra)
    return [max_size] * (n // min_size)


def group_learners(
    catalog: Catalog,
    learners: Mapping[str, LearnerState],
    purpose: str,
    *,
    profiles: Mapping[str, Profile] | None = None,
    min_size: int = 3,
    max_size: int = 6,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> Grouping:
    if min_size < 1 or max_size < min_size:
        raise ValueError(f"group sizes must satisfy 1 <= min <= max, got {min_size}..{max_size}")
    profiles = profiles or {}
    ids = sorted(learners)
    frontiers = {lid: set(frontier(catalog, learners[lid], config)) for lid in ids}
    interests = {lid: set(profiles.get(lid, Profile()).interests) for lid in ids}
    if not ids:
        return Grouping((), (), "The class has no learners.")
    if len(ids) < min_size:
        return _small_class(catalog, ids, purpose, frontiers, interests, min_size)
    if purpose == NEED:
        return _by_shared(catalog, ids, frontiers, min_size, max_size, "skill")
    if purpose == INTEREST:
        return _by_shared(catalog, ids, interests, min_size, max_size, "interest")
    if purpose == MIXED:
        return _mixed(catalog, learners, ids, min_size, max_size, config)
    raise ValueError(f"unknown grouping purpose {purpose!r}")


def _depth(catalog: Catalog, key: str) -> int:
    return catalog.depth.get(key, 0)


def _activity(catalog: Catalog, binding: str, kind: str) -> str:
    """A resource for the skill (or tagged with the interest), else the easiest untimed item."""
    if kind == "interest":
        tagged = sorted(
            r.resource_id for r in catalog.resources.values() if binding in r.interest_tags
        )
        return tagged[0] if tagged else ""
    resources = catalog.resources_for(binding)
    if resources:
        return resources[0].resource_id
    items = sorted(
        (i for i in catalog.items_for(binding) if not i.timed),
        key=lambda i: (i.difficulty, i.item_id),
    )
    return items[0].item_id if items else ""


def _describe(catalog: Catalog, binding: str, kind: str, n: int) -> str:
    if kind == "interest":
        return f"{n} learners who share an interest in {binding}."
    name = catalog.skills[binding].name if binding in catalog.skills else binding
    name = name or binding
    return f"{n} learners ready for {name}: it is the next skill for each of them."


def _by_shared(
    catalog: Catalog,
    ids: list[str],
    sets: Mapping[str, set[str]],
    min_size: int,
    max_size: int,
    kind: str,
) -> Grouping:
    pool = set(ids)
    groups: list[tuple[list[str], str]] = []
    while True:
        counts: dict[str, list[str]] = {}
        for lid in sorted(pool):
            for key in sets[lid]:
                counts.setdefault(key, []).append(lid)
        if not counts:
            break
        key, members = min(
            counts.items(), key=lambda kv: (-len(kv[1]), _depth(catalog, kv[0]), kv[0])
        )
        if len(members) < min_size:
            break
        start = 0
        for size in split_sizes(len(members), min_size, max_size):
            groups.append((members[start : start + size], key))
            start += size
        pool -= set(members[:start])
    unplaced_reasons: dict[str, str] = {}
    for lid in sorted(pool):
        fits = [g for g in groups if g[1] in sets[lid] and len(g[0]) < max_size]
        if fits:
            min(fits, key=lambda g: (len(g[0]), g[1]))[0].append(lid)
        elif not sets[lid]:
            unplaced_reasons[lid] = (
                "no next skill in the catalog: extension work"
                if kind == "skill"
                else "no declared interest"
            )
        else:
            unplaced_reasons[lid] = f"no other learners share their {kind} with room in a group"
    out = tuple(
        Group(
            tuple(sorted(members)),
            key,
            _activity(catalog, key, kind),
            _describe(catalog, key, kind, len(members)),
        )
        for members, key in groups
    )
    unplaced = tuple(sorted(unplaced_reasons))
    text = f"{len(out)} group(s) by shared {'need' if kind == 'skill' else 'interest'}"
    if unplaced:
        text += f"; {len(unplaced)} learner(s) fit no group and work individually with the teacher"
    return Grouping(out, unplaced, text + ".", unplaced_reasons)


def _mixed(
    catalog: Catalog,
    learners: Mapping[str, LearnerState],
    ids: list[str],
    min_size: int,
    max_size: int,
    config: PolicyConfig,
) -> Grouping:
    sizes = split_sizes(len(ids), min_size, max_size)
    g = len(sizes)
    mastered = {lid: mastered_skills(catalog, learners[lid], config) for lid in ids}
    best: tuple[tuple[int, int, int, str], str] | None = None
    for skill_id in sorted(catalog.skills):
        n_experts = sum(1 for lid in ids if skill_id in mastered[lid])
        if 0 < n_experts < len(ids):
            score = (
                -min(n_experts, g),
                -min(n_experts, len(ids) - n_experts),
                _depth(catalog, skill_id),
            )
            candidate = ((*score, skill_id), skill_id)
            if best is None or candidate[0] < best[0]:
                best = candidate
    target = best[1] if best else ""

    def ability(lid: str) -> float:
        if target:
            return learners[lid].get(target).p_mastered
        states = learners[lid].skills.values()
        return sum(s.p_mastered for s in states) / len(states) if states else 0.0

    experts = sorted(
        (lid for lid in ids if target and target in mastered[lid]), key=lambda x: (-ability(x), x)
    )
    others = sorted((lid for lid in ids if lid not in experts), key=lambda x: (-ability(x), x))
    members: list[list[str]] = [[] for _ in sizes]
    order = experts + others
    placed = 0
    turn = 0
    for lid in order:
        if placed == sum(sizes):
            break
        # deal round-robin to groups that still have room
        while len(members[turn % g]) >= sizes[turn % g]:
            turn += 1
        members[turn % g].append(lid)
        turn += 1
        placed += 1
    leftover = order[placed:]
    binding = target or "mixed_ability"
    name = (catalog.skills[target].name or target) if target else "the class's skills"
    groups = []
    for group in members:
        has_expert = any(lid in experts for lid in group)
        text = (
            f"Mixed ability on {name}: at least one member has mastered it and can help the others."
            if has_expert
            else f"Mixed ability on {name}: no member has mastered it yet; the teacher leads."
        )
        groups.append(
            Group(
                tuple(sorted(group)),
                binding,
                _activity(catalog, target, "skill") if target else "",
                text,
            )
        )
    reasons = {lid: "group sizes could not be balanced within the bounds" for lid in leftover}
    text = f"{len(groups)} mixed-ability group(s)" + (f" around {name}" if target else "")
    if leftover:
        text += f"; {len(leftover)} learner(s) left over, placed by the teacher"
    return Grouping(tuple(groups), tuple(sorted(leftover)), text + ".", reasons)


def _small_class(
    catalog: Catalog,
    ids: Sequence[str],
    purpose: str,
    frontiers: Mapping[str, set[str]],
    interests: Mapping[str, set[str]],
    min_size: int,
) -> Grouping:
    sets = frontiers if purpose in (NEED, MIXED) else interests
    shared = set.intersection(*(sets[lid] for lid in ids)) if purpose != MIXED else set()
    kind = "interest" if purpose == INTEREST else "skill"
    if shared:
        binding = min(shared, key=lambda k: (_depth(catalog, k), k))
        activity = _activity(catalog, binding, kind)
    else:
        binding, activity = WHOLE_CLASS, ""
    text = (
        f"The class has {len(ids)} learner(s), fewer than the minimum group size {min_size}: "
        "one group of the whole class."
    )
    return Grouping((Group(tuple(ids), binding, activity, text),), (), text)
