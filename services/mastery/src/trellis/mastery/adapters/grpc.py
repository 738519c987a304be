"""The mastery read API (`trellis.mastery.v1.MasteryService`): authorizes, pseudonymizes, reads.

`GetLearnerMastery`, `GetLearnerProfile`, `PredictItems` and `GetClassMastery` for now, from this
worker's table: right with a single worker. With several, a learner whose partition another
worker owns gets UNAVAILABLE rather than a wrong "no state" answer, and so does a class read on a
worker that does not hold every partition; routing to the owner is a later issue. Methods not
overridden here answer UNIMPLEMENTED until they are built.

`GetClassMastery` names learners by their pseudonymous id (the service cannot turn a pseudonym
back into a SIS id; callers join with the roster, which uses the same ids).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, NoReturn

import grpc

from trellis.common.grpc.auth import (
    authorize_class,
    authorize_learner,
    authorize_tenant,
    current_principal,
)
from trellis.common.grpc.errors import InvalidArgument, NotFound, Unavailable
from trellis.common.pb.events.v1 import envelope_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer, UnknownTenantKey
from trellis.mastery.domain import Profile, SkillState
from trellis.mastery.events import LEVELS
from trellis.mastery.service import MasteryService, NotOwned

SERVICE_NAME = mastery_pb2.DESCRIPTOR.services_by_name["MasteryService"].full_name
Context = grpc.aio.ServicerContext[Any, Any]


class MasteryServicer(mastery_pb2_grpc.MasteryServiceServicer):
    def __init__(self, service: MasteryService, pseudonymizer: Pseudonymizer) -> None:
        self._service = service
        self._pseudonymizer = pseudonymizer

    async def GetLearnerMastery(
        self, request: mastery_pb2.GetLearnerMasteryRequest, context: Context
    ) -> mastery_pb2.LearnerMastery:
        pseudonym = self._learner(request.tenant_id, request.learner_id)
        try:
            skills = self._service.mastery_of(request.tenant_id, pseudonym, request.skill_ids)
        except NotOwned as exc:
            raise Unavailable("this learner's state is held by another mastery worker") from exc
        # In the order asked for; all skills by id when none were named.
        items = list(skills.items()) if request.skill_ids else sorted(skills.items())
        return mastery_pb2.LearnerMastery(
            tenant_id=request.tenant_id,
            learner_id=request.learner_id,
            skills=[_skill(skill_id, state) for skill_id, state in items],
        )

    def _learner(self, tenant_id: str, learner_id: str) -> str:
        """Authorize the caller for this learner; the learner's pseudonym."""
        principal = current_principal()
        authorize_tenant(principal, tenant_id)
        if not learner_id:
            raise InvalidArgument([("learner_id", "must not be empty")])
        # Learners see only themselves; a teacher's class scope needs the roster (later issue).
        authorize_learner(principal, learner_id)
        try:
            return self._pseudonymizer.pseudonymize(tenant_id, learner_id)
        except UnknownTenantKey as exc:
            raise NotFound("no learners are known for this tenant") from exc

    async def GetLearnerProfile(
        self, request: mastery_pb2.GetLearnerProfileRequest, context: Context
    ) -> mastery_pb2.LearnerProfile:
        pseudonym = self._learner(request.tenant_id, request.learner_id)
        try:
            profile, class_ids = self._service.profile_of(request.tenant_id, pseudonym)
        except NotOwned as exc:
            raise Unavailable("this learner's state is held by another mastery worker") from exc
        return _profile(request.tenant_id, request.learner_id, profile, class_ids)

    async def GetClassMastery(
        self, request: mastery_pb2.GetClassMasteryRequest, context: Context
    ) -> mastery_pb2.ClassMastery:
        principal = current_principal()
        authorize_tenant(principal, request.tenant_id)
        if not request.class_id:
            raise InvalidArgument([("class_id", "must not be empty")])
        authorize_class(principal, request.class_id)
        try:
            learners = self._service.class_mastery(
                request.tenant_id, request.class_id, request.skill_ids
            )
        except NotOwned as exc:
            raise Unavailable("class reads need every partition on one mastery worker") from exc
        return mastery_pb2.ClassMastery(
            class_id=request.class_id,
            learners=[
                mastery_pb2.LearnerMastery(
                    tenant_id=request.tenant_id,
                    learner_id=learner_id,
                    skills=[
                        _skill(skill_id, state)
                        for skill_id, state in (
                            skills.items() if request.skill_ids else sorted(skills.items())
                        )
                    ],
                )
                for learner_id, skills in learners.items()
            ],
        )

    async def PredictItems(
        self, request: mastery_pb2.PredictItemsRequest, context: Context
    ) -> mastery_pb2.PredictItemsResponse:
        pseudonym = self._learner(request.tenant_id, request.learner_id)
        # A read: the wall clock only decides how far recall has decayed in this answer.
        now = datetime.now(UTC)
        try:
            predicted = self._service.predict_items(
                request.tenant_id, pseudonym, request.item_ids, now
            )
        except NotOwned as exc:
            raise Unavailable("this learner's state is held by another mastery worker") from exc
        return mastery_pb2.PredictItemsResponse(
            predictions=[
                mastery_pb2.ItemPrediction(item_id=item_id, p_correct=p)
                for item_id, p in predicted.items
            ],
            model_version=predicted.model_version,
        )

    async def SubscribeMastery(
        self, request: Any, context: Context
    ) -> AsyncIterator[envelope_pb2.Envelope]:
        await _not_yet(context)
        yield envelope_pb2.Envelope()  # unreachable: makes this a streaming handler


async def _not_yet(context: Context) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not implemented yet")
    raise AssertionError("abort raises")


def _profile(
    tenant_id: str, learner_id: str, profile: Profile, class_ids: tuple[str, ...]
) -> mastery_pb2.LearnerProfile:
    return mastery_pb2.LearnerProfile(
        tenant_id=tenant_id,
        learner_id=learner_id,
        goals=[
            mastery_pb2.Goal(
                goal_id=g.goal_id,
                skill_id=g.skill_id,
                description=g.description,
                target_date=g.target_date,
            )
            for g in profile.goals
        ],
        interests=list(profile.interests),
        modality=profile.modality,
        pace=profile.pace,
        accommodations=list(profile.accommodations),
        pins=[
            mastery_pb2.Pin(
                activity_id=p.activity_id,
                activity_kind=p.activity_kind,
                skill_id=p.skill_id,
                note=p.note,
            )
            for p in profile.pins
        ],
        class_ids=list(class_ids),
    )


def _skill(skill_id: str, state: SkillState) -> mastery_pb2.SkillMastery:
    message = mastery_pb2.SkillMastery(
        skill_id=skill_id,
        p_mastered=state.effective,
        level=LEVELS[state.level],
        attempts=state.attempts,
        model_version=state.model_version,
        struggling=state.struggling,
        overridden=state.override is not None,
    )
    if state.last_event_time is not None:
        message.last_practiced_at.FromDatetime(state.last_event_time)
    return message
