"""Learning paths: the ordered skills from a learner's state to a goal skill. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from trellis.recommender.model import Catalog, LearnerState
from trellis.recommender.policy import DEFAULT_CONFIG, PolicyConfig, mastered_skills


class UnknownSkill(KeyError):
    """The goal names no skill of the tenant's catalog."""


@dataclass(frozen=True, slots=True)
class Step:
    skill_id: str
    p_mastered: float
    explanation: str


@dataclass(frozen=True, slots=True)
class Path:
    steps: tuple[Step, ...]
    explanation: str


def learning_path(
    catalog: Catalog,
    learner: LearnerState,
    goal_skill_id: str,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> Path:
    """Every skill the goal depends on (and the goal) that the learner has not mastered, each
    after its prerequisites. Next step first: among the skills that are ready, the one closest to
    mastery, then by id. Skills taken as mastered (shown, overridden, or implied by a mastered
    skill that builds on them) are left out."""
    if goal_skill_id not in catalog.skills:
        raise UnknownSkill(goal_skill_id)
    mastered = mastered_skills(catalog, learner, config)
    goal_name = catalog.skills[goal_skill_id].name or goal_skill_id
    needed = {s for s in (goal_skill_id, *catalog.ancestors(goal_skill_id)) if s not in mastered}
    if not needed:
        return Path((), f"{goal_name} is already mastered: nothing left on the way.")
    order = catalog.topological(needed, {s: -learner.get(s).p_mastered for s in needed})
    steps = []
    for position, skill_id in enumerate(order):
        name = catalog.skills[skill_id].name or skill_id
        before = [p for p in catalog.prerequisites(skill_id) if p in needed]
        if position == 0:
            text = f"Next: {name}; everything it builds on is mastered."
        elif skill_id == goal_skill_id:
            text = f"The goal, {name}, once its prerequisites are mastered."
        elif before:
            text = f"{name}, after {', '.join(sorted(before))}."
        else:
            text = f"{name}; its prerequisites are mastered, so it can be done at any point."
        steps.append(Step(skill_id, learner.get(skill_id).p_mastered, text))
    return Path(
        tuple(steps),
        f"{len(steps)} skill(s) to master on the way to {goal_name}, next step first.",
    )
