"""The closed loop: simulated learners follow the recommender's options, and every event they make
goes to ingest as it happens, so the next recommendation can see it (loopback only).

Each learner lives through the simulated days one after the other; before each item the learner
asks `NextActivities`, takes an option (`FollowRecommendations`) and records the choice as a
`RecommendationChosen` event before the attempt. Mastery is updated asynchronously by the worker:
`settle_s` waits after each attempt so that the next recommendation usually reflects it.
Sessions that an offline device would deliver late are sent at once here.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.pb.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from trellis.simulator.district import District, Learner, catalog_records, roster_records
from trellis.simulator.learners import (
    BehaviourConfig,
    FollowRecommendations,
    LearnerRun,
    Offer,
    Option,
)
from trellis.simulator.load import check_loopback, setup_district
from trellis.simulator.simulation import Simulation, split_learners


class RecommenderClient:
    """`NextActivities` for one tenant; an error answers None (the learner falls back)."""

    def __init__(self, target: str, token: str, tenant_id: str, k: int = 4) -> None:
        check_loopback(target)
        self._channel = grpc.insecure_channel(target)
        self._stub = recommender_pb2_grpc.RecommenderServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._tenant_id = tenant_id
        self._k = k
        self.errors: Counter[str] = Counter()

    def __call__(self, learner: Learner) -> Offer | None:
        try:
            reply = self._stub.NextActivities(
                recommender_pb2.NextActivitiesRequest(
                    tenant_id=self._tenant_id, learner_id=learner.learner_id, k=self._k
                ),
                metadata=self._metadata,
                timeout=10,
            )
        except grpc.RpcError as error:
            self.errors[error.code().name] += 1
            return None
        return Offer(
            reply.recommendation_id,
            tuple(Option(o.activity_id, o.activity_kind, o.skill_id) for o in reply.options),
        )

    def close(self) -> None:
        self._channel.close()


@dataclass
class ClosedLoopReport:
    learners: int = 0
    events_sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    recommendations_taken: int = 0
    fallbacks: int = 0
    recommender_errors: dict[str, int] = field(default_factory=dict)
    ingest_retries: int = 0  # calls refused (overload, unavailable) and sent again
    setup: dict[str, int] = field(default_factory=dict)


RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


def _record(
    ingest: ingest_pb2_grpc.IngestServiceStub,
    request: ingest_pb2.RecordEventsRequest,
    metadata: tuple[tuple[str, str], ...],
    report: ClosedLoopReport,
    attempts: int = 6,
) -> ingest_pb2.RecordEventsResponse:
    """One call, retried with backoff while ingest is overloaded or unavailable."""
    for attempt in range(attempts):
        try:
            return ingest.RecordEvents(request, metadata=metadata, timeout=30)
        except grpc.RpcError as error:
            if error.code() not in RETRYABLE or attempt == attempts - 1:
                raise
            report.ingest_retries += 1
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def run_closed_loop(
    ingest_target: str,
    recommender_target: str,
    token: str,
    district: District,
    behaviour: BehaviourConfig,
    settle_s: float = 0.05,
    on_event: Callable[[], None] | None = None,
) -> tuple[Simulation, ClosedLoopReport]:
    check_loopback(ingest_target)
    tenant_id = district.config.tenant_id
    report = ClosedLoopReport(learners=len(district.learners))
    report.setup = asyncio.run(setup_district(ingest_target, token, district))
    recommender = RecommenderClient(recommender_target, token, tenant_id)
    statuses: Counter[str] = Counter()
    events = []
    truth = []
    metadata = (("authorization", f"Bearer {token}"),)
    try:
        with grpc.insecure_channel(ingest_target) as channel:
            ingest = ingest_pb2_grpc.IngestServiceStub(channel)
            for learner in district.learners:
                policy = FollowRecommendations(learner, recommender)
                run = LearnerRun(district, learner, behaviour, policy=policy)
                for timed in run.events():
                    request = ingest_pb2.RecordEventsRequest(
                        tenant_id=tenant_id, events=[timed.envelope]
                    )
                    reply = _record(ingest, request, metadata, report)
                    for result in reply.results:
                        statuses[ingest_pb2.ItemStatus.Name(result.status)] += 1
                    events.append(timed.envelope)
                    if on_event is not None:
                        on_event()
                    if settle_s and timed.envelope.HasField("item_attempted"):
                        time.sleep(settle_s)
                truth.extend(run.truth_rows)
                report.recommendations_taken += policy.offers
                report.fallbacks += policy.fallbacks
    finally:
        recommender.close()
    report.events_sent = len(events)
    report.statuses = dict(statuses)
    report.recommender_errors = dict(recommender.errors)
    simulation = Simulation(
        district=district,
        catalog=catalog_records(district),
        roster=roster_records(district),
        events=events,
        truth=truth,
        test_learners=split_learners(district, 0.2),
    )
    return simulation, report
