"""Use cases over a fake MasteryPort: what each mastery failure turns into."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from tests.unit.recommender.fixtures import CATALOG, mastered, state
from trellis.common.pb.events.v1 import roster_pb2
from trellis.recommender.model import LearnerState, Pin, Profile
from trellis.recommender.paths import UnknownSkill
from trellis.recommender.policy import PolicyConfig
from trellis.recommender.replica import Replica
from trellis.recommender.service import (
    GroupRequest,
    MasteryUnavailable,
    MasteryUnimplemented,
    RecommenderService,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class FakePort:
    def __init__(self) -> None:
        self.state = state(mastered("count"))
        self.profile_answer: Profile = Profile(pins=(Pin("shapes-text", "resource"),))
        self.predictions: dict[str, float] = {}
        self.failing: set[str] = set()
        self.member_profiles_read: list[str] = []

    def _check(self, method: str) -> None:
        if method in self.failing:
            raise (
                MasteryUnimplemented(method) if method == "predict" else MasteryUnavailable(method)
            )

    async def learner_state(self, tenant_id: str, learner_id: str, now: datetime) -> LearnerState:
        self._check("state")
        return self.state

    async def profile(self, tenant_id: str, learner_id: str) -> Profile:
        self._check("profile")
        return self.profile_answer

    async def member_profile(self, tenant_id: str, pseudonymous_id: str) -> Profile:
        self._check("profile")
        self.member_profiles_read.append(pseudonymous_id)
        return self.profile_answer

    async def class_states(
        self, tenant_id: str, class_id: str, now: datetime
    ) -> dict[str, LearnerState]:
        self._check("class")
        return {f"p{n}": self.state for n in range(4)}

    async def predict(
        self, tenant_id: str, learner_id: str, item_ids: Sequence[str]
    ) -> dict[str, float]:
        self._check("predict")
        return {i: self.predictions.get(i, 0.7) for i in item_ids}


def enrollment(sourced_id: str, user_id: str, role: str) -> roster_pb2.RosterRecord:
    """An enrollment in class c1 of tenant t."""
    return roster_pb2.RosterRecord(
        tenant_id="t",
        enrollment=roster_pb2.Enrollment(
            sourced_id=sourced_id, class_id="c1", user_id=user_id, role=role
        ),
    )


def make() -> tuple[RecommenderService, FakePort, Replica]:
    replica = Replica()
    for skill in CATALOG.skills.values():
        replica.put_skill("t", skill)
    for item in CATALOG.items.values():
        replica.put_item("t", item)
    for resource in CATALOG.resources.values():
        replica.put_resource("t", resource)
    for n in range(4):
        replica.roster.apply(enrollment(f"e{n}", f"p{n}", "learner"))
    port = FakePort()
    config = PolicyConfig(broaden_every=0)
    return RecommenderService(replica, port, lambda _t: config, lambda: NOW), port, replica


async def test_next_activities_with_every_upstream() -> None:
    service, _, _ = make()
    answer = await service.next_activities("t", "sis-1", 3)
    assert not answer.degraded
    assert answer.options[0].activity_id == "shapes-text"
    assert all("estimated_success" not in o.codes for o in answer.options)


async def test_missing_state_is_an_error_not_a_guess() -> None:
    service, port, _ = make()
    port.failing.add("state")
    with pytest.raises(MasteryUnavailable):
        await service.next_activities("t", "sis-1", 3)


async def test_missing_profile_is_degraded_and_conservative() -> None:
    service, port, _ = make()
    port.failing.add("profile")
    port.predictions = {"add-drill": 0.725}
    answer = await service.next_activities("t", "sis-1", 6)
    assert answer.degraded
    ids = [o.activity_id for o in answer.options]
    assert "shapes-text" not in ids  # pins are unknown
    assert "add-drill" not in ids  # timed items are out
    for option in answer.options:
        if option.activity_kind == "resource":
            assert "audio" in CATALOG.resources[option.activity_id].accessibility


async def test_missing_predictions_fall_back_to_the_estimate() -> None:
    service, port, _ = make()
    port.failing.add("predict")
    answer = await service.next_activities("t", "sis-1", 3)
    assert not answer.degraded
    assert any("estimated_success" in o.codes for o in answer.options)


async def test_learning_path_and_unknown_goal() -> None:
    service, _, _ = make()
    path = await service.learning_path("t", "sis-1", "multiply")
    assert [s.skill_id for s in path.steps] == ["add", "multiply"]
    with pytest.raises(UnknownSkill):
        await service.learning_path("t", "sis-1", "nope")


async def test_grouping_uses_roster_membership() -> None:
    service, port, replica = make()
    port.state = state(mastered("count"), mastered("shapes"))
    replica.roster.apply(enrollment("e9", "teacher-1", "teacher"))
    grouping = await service.group_learners(GroupRequest("t", "c1", "need", 3, 6))
    assert [g.learner_ids for g in grouping.groups] == [("p0", "p1", "p2", "p3")]
    port.failing.add("class")
    with pytest.raises(MasteryUnavailable):
        await service.group_learners(GroupRequest("t", "c1", "need", 3, 6))


async def test_interest_grouping_reads_each_members_profile_by_pseudonym() -> None:
    service, port, _ = make()
    port.profile_answer = Profile(interests=("music",))
    grouping = await service.group_learners(GroupRequest("t", "c1", "interest", 3, 6))
    assert [(g.binding, len(g.learner_ids)) for g in grouping.groups] == [("music", 4)]
    # The roster's ids, never taken for SIS ids.
    assert sorted(port.member_profiles_read) == ["p0", "p1", "p2", "p3"]
    port.failing.add("profile")
    with pytest.raises(MasteryUnavailable):
        await service.group_learners(GroupRequest("t", "c1", "interest", 3, 6))
