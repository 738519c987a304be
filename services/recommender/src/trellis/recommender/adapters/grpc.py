"""The recommender gRPC servicer. First version: the contract is served and authenticated, and
every method answers UNIMPLEMENTED until the recommendation policy lands (see the issue tracker)."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from trellis.common.pb.recommender.v1 import recommender_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


async def _not_yet(context: Context) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the recommendation policy is not built yet")
    raise AssertionError("abort raises")


class RecommenderServicer(recommender_pb2_grpc.RecommenderServiceServicer):
    async def NextActivities(self, request: Any, context: Context) -> Any:
        await _not_yet(context)

    async def LearningPath(self, request: Any, context: Context) -> Any:
        await _not_yet(context)

    async def GroupLearners(self, request: Any, context: Context) -> Any:
        await _not_yet(context)
