"""Groups by need, interest and mixed ability; the small-class and unmatched-learner rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.recommender.fixtures import CATALOG, mastered, practicing, state
from trellis.recommender.grouping import (
    INTEREST,
    MIXED,
    NEED,
    WHOLE_CLASS,
    Grouping,
    group_learners,
    split_sizes,
)
from trellis.recommender.model import LearnerState, Profile
from trellis.recommender.policy import PolicyConfig, frontier, mastered_skills

CONFIG = PolicyConfig()


def class_of() -> dict[str, LearnerState]:
    """13 learners: 6 ready for add, 5 ready for multiply, 1 who has mastered everything, 1 new."""
    learners: dict[str, LearnerState] = {}
    for n in range(6):
        learners[f"a{n}"] = state(mastered("count"), mastered("shapes"), practicing("add", 0.1 * n))
    for n in range(5):
        learners[f"m{n}"] = state(mastered("add"), mastered("shapes"), mastered("subtract"))
    learners["done"] = state(*(mastered(s) for s in CATALOG.skills))
    learners["new"] = LearnerState()
    return learners


def every_learner_once(grouping: Grouping, learners: dict[str, LearnerState]) -> None:
    placed = [lid for g in grouping.groups for lid in g.learner_ids] + list(grouping.unplaced)
    assert sorted(placed) == sorted(learners)


def test_need_groups_share_a_frontier_skill_within_bounds() -> None:
    learners = class_of()
    grouping = group_learners(CATALOG, learners, NEED, min_size=3, max_size=4)
    every_learner_once(grouping, learners)
    assert len(grouping.groups) == 3  # add: 3 + 3; multiply: 4 (5 cannot be split within 3..4)
    for group in grouping.groups:
        assert 3 <= len(group.learner_ids) <= 4
        for lid in group.learner_ids:
            assert group.binding in frontier(CATALOG, learners[lid], CONFIG)
        assert group.suggested_activity_id
        assert group.explanation
    # unplaced, each with the reason: nothing left to learn; the fifth multiply learner (no group
    # with room); the new learner (nobody else has count or shapes next)
    assert grouping.unplaced == ("done", "m4", "new")
    assert "extension" in grouping.unplaced_reasons["done"]
    assert "no other learners" in grouping.unplaced_reasons["m4"]
    wider = group_learners(CATALOG, learners, NEED, min_size=3, max_size=6)
    every_learner_once(wider, learners)
    assert wider.unplaced == ("done", "new")


def test_an_unmatched_learner_joins_a_group_with_room_whose_skill_fits() -> None:
    learners = {f"a{n}": state(mastered("count")) for n in range(4)}
    learners["x"] = state(mastered("count"), mastered("shapes"))  # frontier: add only
    grouping = group_learners(CATALOG, learners, NEED, min_size=3, max_size=6)
    every_learner_once(grouping, learners)
    assert grouping.unplaced == ()
    assert len(grouping.groups) == 1 and grouping.groups[0].binding == "add"


def test_learners_who_fit_no_group_are_listed_with_a_reason() -> None:
    learners = {f"a{n}": state(mastered("count"), mastered("shapes")) for n in range(3)}
    learners["f"] = state(mastered("multiply"), mastered("shapes"), mastered("subtract"))
    grouping = group_learners(CATALOG, learners, NEED, min_size=3, max_size=3)
    every_learner_once(grouping, learners)
    assert grouping.unplaced == ("f",)
    assert "no other learners" in grouping.unplaced_reasons["f"]


@pytest.mark.parametrize("purpose", [NEED, INTEREST, MIXED])
def test_a_class_smaller_than_the_minimum_is_one_group(purpose: str) -> None:
    learners = {
        "a": state(mastered("count"), mastered("shapes")),
        "b": state(mastered("count"), mastered("shapes")),
    }
    profiles = {"a": Profile(interests=("music",)), "b": Profile(interests=("music", "art"))}
    grouping = group_learners(CATALOG, learners, purpose, profiles=profiles, min_size=3)
    assert [g.learner_ids for g in grouping.groups] == [("a", "b")]
    assert "fewer than the minimum" in grouping.explanation
    expected = {NEED: "add", INTEREST: "music", MIXED: WHOLE_CLASS}[purpose]
    assert grouping.groups[0].binding == expected


def test_empty_class() -> None:
    assert group_learners(CATALOG, {}, NEED).groups == ()


def test_interest_groups() -> None:
    learners = {f"l{n}": LearnerState() for n in range(8)}
    profiles = {f"l{n}": Profile(interests=("music",) if n < 5 else ("space",)) for n in range(8)}
    profiles["l7"] = Profile()
    grouping = group_learners(CATALOG, learners, INTEREST, profiles=profiles, min_size=2)
    every_learner_once(grouping, learners)
    bindings = {g.binding: g.learner_ids for g in grouping.groups}
    assert bindings["music"] == ("l0", "l1", "l2", "l3", "l4")
    assert bindings["space"] == ("l5", "l6")
    assert grouping.unplaced == ("l7",)
    assert grouping.groups[0].suggested_activity_id.endswith("podcast")


def test_mixed_groups_each_have_someone_who_mastered_the_target() -> None:
    learners = class_of()
    grouping = group_learners(CATALOG, learners, MIXED, min_size=3, max_size=5)
    every_learner_once(grouping, learners)
    target = grouping.groups[0].binding
    for group in grouping.groups:
        assert 3 <= len(group.learner_ids) <= 5
        assert group.binding == target
        masters = [
            target in mastered_skills(CATALOG, learners[x], CONFIG) for x in group.learner_ids
        ]
        assert any(masters) and not all(masters)


def test_bad_bounds() -> None:
    with pytest.raises(ValueError):
        group_learners(CATALOG, class_of(), NEED, min_size=4, max_size=3)


@given(st.integers(0, 60), st.integers(1, 6), st.integers(0, 6))
def test_split_sizes_stay_within_bounds(n: int, low: int, extra: int) -> None:
    high = low + extra
    sizes = split_sizes(n, low, high)
    assert all(low <= s <= high for s in sizes)
    assert sum(sizes) <= n
    if n >= low and any(low * g <= n <= high * g for g in range(1, n + 1)):
        assert sum(sizes) == n


_SKILL_IDS = sorted(CATALOG.skills)


@given(
    st.lists(st.sets(st.sampled_from(_SKILL_IDS)), min_size=0, max_size=25),
    st.lists(st.sets(st.sampled_from(["music", "art", "space"])), min_size=25, max_size=25),
    st.sampled_from([NEED, INTEREST, MIXED]),
    st.integers(1, 4),
    st.integers(0, 3),
)
def test_grouping_invariants_on_random_classes(
    known: list[set[str]], likes: list[set[str]], purpose: str, low: int, extra: int
) -> None:
    high = low + extra
    learners = {f"l{n:02}": state(*(mastered(s) for s in skills)) for n, skills in enumerate(known)}
    profiles = {lid: Profile(interests=tuple(sorted(likes[n]))) for n, lid in enumerate(learners)}
    grouping = group_learners(
        CATALOG, learners, purpose, profiles=profiles, min_size=low, max_size=high
    )
    every_learner_once(grouping, learners)
    assert set(grouping.unplaced) == set(grouping.unplaced_reasons)
    if len(learners) < low:
        assert len(grouping.groups) <= 1 and not grouping.unplaced
        return
    for group in grouping.groups:
        assert low <= len(group.learner_ids) <= high
        if purpose == NEED:
            for lid in group.learner_ids:
                assert group.binding in frontier(CATALOG, learners[lid], CONFIG)
        if purpose == INTEREST:
            for lid in group.learner_ids:
                assert group.binding in profiles[lid].interests
