"""The mastery read API as the recommender's MasteryPort: every call with a deadline; failures
become MasteryUnavailable (or MasteryUnimplemented), which the use cases turn into UNAVAILABLE or
a documented degraded answer."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import grpc

from trellis.common.grpc.channels import open_channel
from trellis.common.pb.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from trellis.common.settings import GrpcTlsSettings
from trellis.recommender.adapters import convert
from trellis.recommender.model import LearnerState, Profile
from trellis.recommender.service import MasteryDenied, MasteryUnavailable, MasteryUnimplemented

T = TypeVar("T")

# The `authorization` metadata of the call being served, forwarded to mastery when the recommender
# has no token of its own. Set by the servicer; each RPC runs in its own task, so it stays per call.
caller_authorization: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "recommender_caller_authorization", default=None
)


class MasteryClient:
    def __init__(
        self,
        address: str,
        token: str | None,
        deadline_s: float,
        tls: GrpcTlsSettings | None = None,
    ) -> None:
        self._channel = open_channel(address, tls)
        self._stub = mastery_pb2_grpc.MasteryServiceStub(self._channel)
        self._token = token
        self._deadline_s = deadline_s

    async def _call(self, method: str, call: Callable[..., Awaitable[T]], request: Any) -> T:
        try:
            authorization = f"Bearer {self._token}" if self._token else caller_authorization.get()
            metadata = (("authorization", authorization),) if authorization else ()
            return await call(request, timeout=self._deadline_s, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            message = f"mastery {method}: {exc.code().name} {exc.details() or ''}".strip()
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise MasteryUnimplemented(message) from exc
            if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                raise MasteryDenied(message) from exc
            raise MasteryUnavailable(message) from exc

    async def learner_state(self, tenant_id: str, learner_id: str, now: datetime) -> LearnerState:
        request = mastery_pb2.GetLearnerMasteryRequest(tenant_id=tenant_id, learner_id=learner_id)
        answer = await self._call("GetLearnerMastery", self._stub.GetLearnerMastery, request)
        return convert.learner_state(answer, now)

    async def profile(self, tenant_id: str, learner_id: str) -> Profile:
        request = mastery_pb2.GetLearnerProfileRequest(tenant_id=tenant_id, learner_id=learner_id)
        answer = await self._call("GetLearnerProfile", self._stub.GetLearnerProfile, request)
        return convert.profile(answer)

    async def member_profile(self, tenant_id: str, pseudonymous_id: str) -> Profile:
        request = mastery_pb2.GetLearnerProfileRequest(
            tenant_id=tenant_id, pseudonymous_id=pseudonymous_id
        )
        answer = await self._call("GetLearnerProfile", self._stub.GetLearnerProfile, request)
        return convert.profile(answer)

    async def class_states(
        self, tenant_id: str, class_id: str, now: datetime
    ) -> dict[str, LearnerState]:
        request = mastery_pb2.GetClassMasteryRequest(tenant_id=tenant_id, class_id=class_id)
        answer = await self._call("GetClassMastery", self._stub.GetClassMastery, request)
        return {m.learner_id: convert.learner_state(m, now) for m in answer.learners}

    async def predict(
        self, tenant_id: str, learner_id: str, item_ids: Sequence[str]
    ) -> dict[str, float]:
        request = mastery_pb2.PredictItemsRequest(
            tenant_id=tenant_id, learner_id=learner_id, item_ids=list(item_ids)
        )
        answer = await self._call("PredictItems", self._stub.PredictItems, request)
        return {p.item_id: p.p_correct for p in answer.predictions}

    async def close(self) -> None:
        await self._channel.close(None)
