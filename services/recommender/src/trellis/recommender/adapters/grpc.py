"""The recommender gRPC servicer. First version: the contract is served and authenticated, and
every method answers UNIMPLEMENTED until the recommendation policy lands (see the issue tracker)."""

from __future__ import annotations

from trellis.common.pb.recommender.v1 import recommender_pb2_grpc


class RecommenderServicer(recommender_pb2_grpc.RecommenderServiceServicer):
    pass
