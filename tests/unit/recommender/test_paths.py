"""Learning paths through the prerequisite graph, next step first."""

from __future__ import annotations

import pytest

from tests.unit.recommender.fixtures import CATALOG, mastered, practicing, state
from trellis.recommender.model import Catalog, LearnerState, Skill
from trellis.recommender.paths import UnknownSkill, learning_path


def test_a_new_learner_walks_the_whole_chain() -> None:
    path = learning_path(CATALOG, LearnerState(), "fractions")
    assert [s.skill_id for s in path.steps] == ["count", "add", "multiply", "fractions"]
    assert path.steps[0].explanation.startswith("Next: Counting")
    assert "4 skill(s)" in path.explanation


def test_mastered_and_implied_skills_are_left_out() -> None:
    path = learning_path(CATALOG, state(mastered("add"), practicing("multiply", 0.4)), "fractions")
    assert [s.skill_id for s in path.steps] == ["multiply", "fractions"]
    assert path.steps[0].p_mastered == 0.4


def test_goal_already_mastered() -> None:
    path = learning_path(CATALOG, state(mastered("fractions")), "multiply")
    assert path.steps == () and "already mastered" in path.explanation


def test_unknown_goal() -> None:
    with pytest.raises(UnknownSkill):
        learning_path(CATALOG, LearnerState(), "calculus")


def test_branches_keep_prerequisites_first_and_prefer_the_nearly_mastered() -> None:
    catalog = Catalog.of(
        [
            Skill("a"),
            Skill("b"),
            Skill("c", prerequisites=("a", "b")),
            Skill("d", prerequisites=("c",)),
        ]
    )
    path = learning_path(catalog, state(practicing("b", 0.8), practicing("a", 0.2)), "d")
    order = [s.skill_id for s in path.steps]
    assert order == ["b", "a", "c", "d"]
    for n, skill_id in enumerate(order):
        assert set(catalog.prerequisites(skill_id)) <= set(order[:n])
