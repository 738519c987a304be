"""Use cases of the recommender: read the learner's state through the mastery port, the catalog
and class membership from the replica, and call the pure policy. No gRPC here: the servicer
authorizes and translates, the mastery adapter implements `MasteryPort`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from trellis.recommender.grouping import Grouping, group_learners
from trellis.recommender.model import (
    EXTENDED_TIME,
    TEXT_TO_SPEECH,
    LearnerState,
    Profile,
    Recommendation,
)
from trellis.recommender.paths import Path, learning_path
from trellis.recommender.policy import PolicyConfig, candidate_items, recommend
from trellis.recommender.replica import Replica


class MasteryUnavailable(Exception):
    """The mastery read API did not answer in time, or answered with an error."""


class MasteryUnimplemented(MasteryUnavailable):
    """The mastery read API does not serve this method (yet)."""


class MasteryDenied(MasteryUnavailable):
    """The mastery read API refused the credentials (the caller's forwarded token or the
    recommender's own): the servicer answers PERMISSION_DENIED rather than UNAVAILABLE."""


class MasteryPort(Protocol):
    async def learner_state(self, tenant_id: str, learner_id: str, now: datetime) -> LearnerState:
        """State of every skill of the learner (SIS id); MasteryUnavailable on failure."""
        ...

    async def profile(self, tenant_id: str, learner_id: str) -> Profile: ...

    async def member_profile(self, tenant_id: str, pseudonymous_id: str) -> Profile:
        """The profile of a class member as the roster names them (pseudonymous id); needs
        the recommender's own `service` token (MasteryDenied with a teacher's)."""
        ...

    async def class_states(
        self, tenant_id: str, class_id: str, now: datetime
    ) -> dict[str, LearnerState]:
        """Per learner of the class (keyed by the id the mastery service returns)."""
        ...

    async def predict(
        self, tenant_id: str, learner_id: str, item_ids: Sequence[str]
    ) -> dict[str, float]: ...


# When the profile cannot be read, the answer is degraded and conservative: as if the learner
# had both accommodations the policy knows, so that none can be broken (docs/recommender.md).
CONSERVATIVE_PROFILE = Profile(accommodations=(EXTENDED_TIME, TEXT_TO_SPEECH))


@dataclass(frozen=True, slots=True)
class GroupRequest:
    tenant_id: str
    class_id: str
    purpose: str
    min_size: int
    max_size: int


class RecommenderService:
    def __init__(
        self,
        replica: Replica,
        mastery: MasteryPort,
        policy_for: Callable[[str], PolicyConfig],
        clock: Callable[[], datetime],
    ) -> None:
        self._replica = replica
        self._mastery = mastery
        self._policy_for = policy_for
        self._clock = clock

    async def next_activities(self, tenant_id: str, learner_id: str, k: int) -> Recommendation:
        """MasteryUnavailable when the learner's state cannot be read (no honest answer without
        it); a degraded answer when only the profile is missing; the documented estimate of
        success, marked in the reasons, when PredictItems is not available."""
        config = self._policy_for(tenant_id)
        catalog = self._replica.catalog(tenant_id)
        state_call = self._mastery.learner_state(tenant_id, learner_id, self._clock())
        profile_call = self._mastery.profile(tenant_id, learner_id)
        state, profile = await asyncio.gather(state_call, profile_call, return_exceptions=True)
        if isinstance(state, BaseException):
            raise state
        degraded = False
        if isinstance(profile, MasteryUnavailable):
            profile, degraded = CONSERVATIVE_PROFILE, True
        elif isinstance(profile, BaseException):
            raise profile
        wanted = candidate_items(catalog, state, profile, config, k)
        predictions: Mapping[str, float] = {}
        if wanted:
            try:
                predictions = await self._mastery.predict(tenant_id, learner_id, wanted)
            except MasteryUnavailable:
                predictions = {}  # the policy estimates and says so in the reasons
        return recommend(
            catalog,
            state,
            profile,
            tenant_id=tenant_id,
            learner_id=learner_id,
            config=config,
            predictions=predictions,
            k=k,
            degraded=degraded,
        )

    async def learning_path(self, tenant_id: str, learner_id: str, goal_skill_id: str) -> Path:
        """UnknownSkill when the goal is not in the catalog; MasteryUnavailable as above."""
        catalog = self._replica.catalog(tenant_id)
        config = self._policy_for(tenant_id)
        if goal_skill_id not in catalog.skills:
            return learning_path(catalog, LearnerState(), goal_skill_id, config)  # raises
        state = await self._mastery.learner_state(tenant_id, learner_id, self._clock())
        return learning_path(catalog, state, goal_skill_id, config)

    async def group_learners(self, request: GroupRequest) -> Grouping:
        """Members come from the roster replica (pseudonymous ids); their state from
        GetClassMastery; their interests from GetLearnerProfile by pseudonymous id (interest
        purpose only)."""
        catalog = self._replica.catalog(request.tenant_id)
        config = self._policy_for(request.tenant_id)
        members = self._replica.roster.class_learners(request.tenant_id, request.class_id)
        states = await self._mastery.class_states(
            request.tenant_id, request.class_id, self._clock()
        )
        learners = {lid: states.get(lid, LearnerState()) for lid in members}
        profiles: dict[str, Profile] = {}
        if request.purpose == "interest" and members:
            found = await asyncio.gather(
                *(self._mastery.member_profile(request.tenant_id, lid) for lid in members)
            )
            profiles = dict(zip(members, found, strict=True))
        return group_learners(
            catalog,
            learners,
            request.purpose,
            profiles=profiles,
            min_size=request.min_size,
            max_size=request.max_size,
            config=config,
        )
