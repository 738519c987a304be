"""The load generator against a stand-in ingest server over loopback gRPC: the open loop keeps its
offered rate, and the report counts statuses, errors, latency and CPU."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent import futures

import grpc
import pytest

from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.pb.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from trellis.simulator.closed_loop import run_closed_loop
from trellis.simulator.district import DistrictConfig, build_district
from trellis.simulator.learners import BehaviourConfig
from trellis.simulator.load import make_district, make_events, run_load, setup_district


class StandIn(ingest_pb2_grpc.IngestServiceServicer):
    """Accepts every event after a short delay; refuses every tenth request as overloaded."""

    def __init__(self) -> None:
        self.calls = 0
        self.tokens: set[str] = set()

    async def RecordEvents(
        self, request: ingest_pb2.RecordEventsRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.RecordEventsResponse:
        self.calls += 1
        self.tokens.update(v for k, v in context.invocation_metadata() if k == "authorization")
        if self.calls % 10 == 0:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")
        await asyncio.sleep(0.002)
        return ingest_pb2.RecordEventsResponse(
            results=[
                ingest_pb2.ItemResult(
                    index=i, event_id=e.event_id, status=ingest_pb2.ITEM_STATUS_ACCEPTED
                )
                for i, e in enumerate(request.events)
            ]
        )

    async def UpsertCatalog(
        self, request: ingest_pb2.UpsertCatalogRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.UpsertResponse:
        self.catalog = len(request.records) + getattr(self, "catalog", 0)
        return _accepted(len(request.records))

    async def UpsertRoster(
        self, request: ingest_pb2.UpsertRosterRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.UpsertResponse:
        return _accepted(len(request.records))


def _accepted(n: int) -> ingest_pb2.UpsertResponse:
    return ingest_pb2.UpsertResponse(
        results=[
            ingest_pb2.ItemResult(index=i, status=ingest_pb2.ITEM_STATUS_ACCEPTED) for i in range(n)
        ]
    )


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[str, StandIn]]:
    server = grpc.aio.server()
    servicer = StandIn()
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(None)


async def test_open_loop_holds_the_offered_rate(stand_in: tuple[str, StandIn]) -> None:
    target, servicer = stand_in
    events = make_events(2_000, learners=100, seed=1, run_id="t")
    answered: list[str] = []
    report = await run_load(
        target,
        "tok",
        "district-test",
        events,
        rate=500.0,
        duration_s=2.0,
        batch=10,
        on_answer=lambda chunk, _: answered.extend(e.event_id for e in chunk),
    )
    # 2 s at 500 events/s in batches of 10: 100 requests, whatever the answers.
    assert report.requests == 100
    assert report.events_sent == 1_000
    assert report.rpc_errors == {"RESOURCE_EXHAUSTED": 10}
    assert report.statuses == {"ITEM_STATUS_ACCEPTED": 900}
    assert 400 <= report.achieved_rate <= 460  # 900 stored over about 2 s
    assert report.latency_ms["p50"] >= 2.0
    assert report.cpu_percent["self"] >= 0
    assert servicer.tokens == {"Bearer tok"}
    assert len(answered) == 900  # the batches ingest answered (not the refused ones)


async def test_max_rate_is_bounded_by_count_and_time(stand_in: tuple[str, StandIn]) -> None:
    target, _ = stand_in
    events = make_events(600, learners=50, seed=2, run_id="t")
    report = await run_load(
        target, "tok", "district-test", events, rate=None, duration_s=30.0, batch=20, concurrency=4
    )
    assert report.events_sent == 600
    assert report.duration_s < 30


async def test_setup_upserts_the_catalog_and_roster(stand_in: tuple[str, StandIn]) -> None:
    target, _ = stand_in
    district = make_district(1_200, seed=2026)
    stored = await setup_district(target, "tok", district)
    assert stored == {
        "catalog": 54,
        "roster": 1 + 1 + 2 * 2 + 2 * 1_200,
    }  # orgs, classes+teachers, learners+enrollments


async def test_refuses_other_hosts() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await run_load("192.0.2.1:50051", "tok", "t", [], rate=1.0, duration_s=1.0)


class StandInRecommender(recommender_pb2_grpc.RecommenderServiceServicer):
    """Offers the last two items of the learner's grade, then a resource; every fifth call fails."""

    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.calls = 0

    def NextActivities(
        self, request: recommender_pb2.NextActivitiesRequest, context: grpc.ServicerContext
    ) -> recommender_pb2.NextActivitiesResponse:
        self.calls += 1
        if self.calls % 5 == 0:
            context.abort(grpc.StatusCode.UNAVAILABLE, "mastery recovering")
        return recommender_pb2.NextActivitiesResponse(
            recommendation_id=f"rec-{self.calls}",
            options=[
                recommender_pb2.ActivityOption(activity_id=i, activity_kind="item")
                for i in self.items
            ]
            + [recommender_pb2.ActivityOption(activity_id="r-1", activity_kind="resource")],
        )


async def test_closed_loop_follows_the_recommender(stand_in: tuple[str, StandIn]) -> None:
    ingest_target, _ = stand_in
    district = build_district(DistrictConfig(seed=4, learners=3))
    items = [i.item_id for i in district.items[-2:]]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    recommender = StandInRecommender(items)
    recommender_pb2_grpc.add_RecommenderServiceServicer_to_server(recommender, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        simulation, report = await asyncio.to_thread(
            run_closed_loop,
            ingest_target,
            f"127.0.0.1:{port}",
            "tok",
            district,
            BehaviourConfig(days=4),
            0.0,
        )
    finally:
        server.stop(None)
    chosen = [e for e in simulation.events if e.HasField("recommendation_chosen")]
    attempts = [e for e in simulation.events if e.HasField("item_attempted")]
    assert report.recommendations_taken == len(chosen) > 0
    assert report.recommender_errors == {"UNAVAILABLE": report.fallbacks}
    assert report.recommendations_taken + report.fallbacks == recommender.calls
    assert {e.recommendation_chosen.activity_id for e in chosen} <= set(items)
    assert {e.recommendation_chosen.option_index for e in chosen} <= {0, 1}
    # Each choice comes right before the attempt of the item chosen.
    index = {id(e): n for n, e in enumerate(simulation.events)}
    for e in chosen:
        following = simulation.events[index[id(e)] + 1]
        assert following.item_attempted.item_id == e.recommendation_chosen.activity_id
    assert report.events_sent == len(simulation.events)
    # Every tenth ingest call is refused as overloaded: the loop retries it.
    assert report.statuses == {"ITEM_STATUS_ACCEPTED": len(simulation.events)}
    assert report.ingest_retries > 0
    assert len(attempts) == len(simulation.truth)
