"""The recommender gRPC servicer: authorizes, translates protobuf to the use cases and back.

Who may call what (DESIGN.md §3a), always within the caller's tenant:
- NextActivities, LearningPath: a learner (their own SIS id), a teacher of one of the learner's
  classes, a district admin or `service` principal (a learning tool asking for its user): a class
  of the learner in their schools, or any learner when unscoped; a platform admin.
- GroupLearners: a teacher of the class, a district admin or `service` principal (the class's
  school in their schools, or any class when unscoped), a platform admin; never a learner.
Class membership and schools come from the roster replica (pseudonymous ids), so the SIS id of
the request is pseudonymized with the tenant key before the check.
"""

from __future__ import annotations

from typing import Any

import grpc

from trellis.common.grpc.auth import (
    authorize_class,
    authorize_class_school,
    authorize_enrolled,
    authorize_learner,
    authorize_tenant,
    current_principal,
    require_role,
    scoped_by_roster,
)
from trellis.common.grpc.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from trellis.common.pb.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer, UnknownTenantKey
from trellis.common.settings import Principal, RecommenderSettings, Role
from trellis.recommender.adapters import convert
from trellis.recommender.adapters.mastery_client import caller_authorization
from trellis.recommender.grouping import INTEREST, MIXED, NEED
from trellis.recommender.paths import UnknownSkill
from trellis.recommender.replica import Replica
from trellis.recommender.service import (
    GroupRequest,
    MasteryDenied,
    MasteryUnavailable,
    RecommenderService,
)

__all__ = ["SERVICE_NAME", "RecommenderServicer"]

SERVICE_NAME = recommender_pb2.DESCRIPTOR.services_by_name["RecommenderService"].full_name
LEARNER_READERS: tuple[Role, ...] = (
    "learner",
    "teacher",
    "district_admin",
    "platform_admin",
    "service",
)
GROUPERS: tuple[Role, ...] = ("teacher", "district_admin", "platform_admin", "service")
_PURPOSES = {
    recommender_pb2.GROUPING_PURPOSE_NEED: NEED,
    recommender_pb2.GROUPING_PURPOSE_INTEREST: INTEREST,
    recommender_pb2.GROUPING_PURPOSE_MIXED: MIXED,
}
Context = grpc.aio.ServicerContext[Any, Any]


def _forward_authorization(context: Context) -> None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            caller_authorization.set(value)


class RecommenderServicer(recommender_pb2_grpc.RecommenderServiceServicer):
    def __init__(
        self,
        service: RecommenderService,
        replica: Replica,
        pseudonymizer: Pseudonymizer,
        settings: RecommenderSettings,
    ) -> None:
        self._service = service
        self._replica = replica
        self._pseudonymizer = pseudonymizer
        self._settings = settings

    def _authorize_learner(self, principal: Principal, tenant_id: str, learner_id: str) -> None:
        require_role(principal, *LEARNER_READERS)
        authorize_tenant(principal, tenant_id)
        if not learner_id:
            raise InvalidArgument([("learner_id", "must not be empty")])
        authorize_learner(principal, learner_id)
        if scoped_by_roster(principal):
            try:
                pseudonym = self._pseudonymizer.pseudonymize(tenant_id, learner_id)
            except UnknownTenantKey as exc:
                raise Unavailable("no pseudonym key for this tenant") from exc
            authorize_enrolled(
                principal,
                self._replica.roster.learner_classes(tenant_id, pseudonym),
                lambda class_id: self._replica.roster.school_of(tenant_id, class_id),
            )

    async def NextActivities(
        self, request: recommender_pb2.NextActivitiesRequest, context: Context
    ) -> recommender_pb2.NextActivitiesResponse:
        principal = current_principal()
        _forward_authorization(context)
        self._authorize_learner(principal, request.tenant_id, request.learner_id)
        k = request.k or self._settings.default_k
        if k > self._settings.max_k:
            raise InvalidArgument([("k", f"at most {self._settings.max_k}")])
        try:
            answer = await self._service.next_activities(request.tenant_id, request.learner_id, k)
        except MasteryDenied as exc:
            raise PermissionDenied(f"the mastery service refused the request ({exc})") from exc
        except MasteryUnavailable as exc:
            raise Unavailable(f"learner state unavailable ({exc})") from exc
        return convert.recommendation(answer)

    async def LearningPath(
        self, request: recommender_pb2.LearningPathRequest, context: Context
    ) -> recommender_pb2.LearningPathResponse:
        principal = current_principal()
        _forward_authorization(context)
        self._authorize_learner(principal, request.tenant_id, request.learner_id)
        if not request.goal_skill_id:
            raise InvalidArgument([("goal_skill_id", "must not be empty")])
        try:
            path = await self._service.learning_path(
                request.tenant_id, request.learner_id, request.goal_skill_id
            )
        except UnknownSkill as exc:
            raise NotFound(f"no skill {request.goal_skill_id!r} in the catalog") from exc
        except MasteryDenied as exc:
            raise PermissionDenied(f"the mastery service refused the request ({exc})") from exc
        except MasteryUnavailable as exc:
            raise Unavailable(f"learner state unavailable ({exc})") from exc
        return convert.path(path)

    async def GroupLearners(
        self, request: recommender_pb2.GroupLearnersRequest, context: Context
    ) -> recommender_pb2.GroupLearnersResponse:
        principal = current_principal()
        _forward_authorization(context)
        require_role(principal, *GROUPERS)
        authorize_tenant(principal, request.tenant_id)
        violations = []
        if not request.class_id:
            violations.append(("class_id", "must not be empty"))
        purpose = _PURPOSES.get(request.purpose)
        if purpose is None:
            violations.append(("purpose", "must be NEED, INTEREST or MIXED"))
        min_size = request.min_size or self._settings.group_min_size
        max_size = request.max_size or max(self._settings.group_max_size, min_size)
        if max_size < min_size:
            violations.append(("max_size", "must be at least min_size"))
        if violations or purpose is None:
            raise InvalidArgument(violations)
        authorize_class(principal, request.class_id)
        authorize_class_school(
            principal, self._replica.roster.school_of(request.tenant_id, request.class_id)
        )
        try:
            grouping = await self._service.group_learners(
                GroupRequest(request.tenant_id, request.class_id, purpose, min_size, max_size)
            )
        except MasteryDenied as exc:
            raise PermissionDenied(f"the mastery service refused the request ({exc})") from exc
        except MasteryUnavailable as exc:
            raise Unavailable(f"class state unavailable ({exc})") from exc
        return convert.grouping(grouping)
