"""The mastery read API (`trellis.mastery.v1.MasteryService`): authorizes, pseudonymizes, reads.

`GetLearnerMastery` and `PredictItems` for now, from this worker's table: right with a single
worker. With several, a learner whose partition another worker owns gets UNAVAILABLE rather than
a wrong "no state" answer; routing to the owner is a later issue. Methods not overridden here
answer UNIMPLEMENTED until they are built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, NoReturn

import grpc

from trellis.common.grpc.auth import authorize_learner, authorize_tenant, current_principal
from trellis.common.grpc.errors import InvalidArgument, NotFound, Unavailable
from trellis.common.pb.events.v1 import envelope_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer, UnknownTenantKey
from trellis.mastery.domain import SkillState
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

    async def GetLearnerProfile(self, request: Any, context: Context) -> Any:
        await _not_yet(context)

    async def GetClassMastery(self, request: Any, context: Context) -> Any:
        await _not_yet(context)

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
