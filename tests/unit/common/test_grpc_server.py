"""trellis.common.grpc: a real grpc.aio server on port 0 with fake servicers, over the wire."""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from trellis.common.grpc import (
    GrpcServer,
    InvalidArgument,
    ResourceExhausted,
    ServiceBinding,
    authorize_class,
    authorize_tenant,
    bad_request_fields,
    bad_request_violations,
    create_server,
    current_principal,
    retry_after_seconds,
    run_until_signal,
)
from trellis.common.metrics import start_metrics_server
from trellis.common.pb.events.v1 import envelope_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.pb.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from trellis.common.pb.reporting.v1 import reporting_pb2, reporting_pb2_grpc
from trellis.common.settings import Principal, ServerSettings

TENANT = "district-a"
TEACHER_TOKEN = "teacher-token-not-secret"
SERVICE_TOKEN = "service-token-not-secret"
TOKENS = {
    TEACHER_TOKEN: Principal(tenant_id=TENANT, role="teacher", classes=["class-1"]),
    SERVICE_TOKEN: Principal(tenant_id=TENANT, role="service"),
}
REPORTING = reporting_pb2.DESCRIPTOR.services_by_name["ReportingService"].full_name
MASTERY = mastery_pb2.DESCRIPTOR.services_by_name["MasteryService"].full_name
INGEST = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name


def auth(token: str = SERVICE_TOKEN, **extra: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"), *extra.items())


class FakeReporting(reporting_pb2_grpc.ReportingServiceServicer):
    async def GetLearnerProgress(self, request: Any, context: Any) -> Any:
        authorize_tenant(current_principal(), request.tenant_id)
        if request.learner_id == "boom":
            raise RuntimeError("internal detail the caller must not see")
        if not request.learner_id.startswith("S"):
            raise InvalidArgument([("learner_id", "must be an SIS id")])
        return reporting_pb2.LearnerProgress(learner_id=request.learner_id)

    async def GetClassHeatmap(self, request: Any, context: Any) -> Any:
        principal = current_principal()
        authorize_tenant(principal, request.tenant_id)
        authorize_class(principal, request.class_id)
        if request.page_token == "slow":
            await asyncio.sleep(0.5)
        return reporting_pb2.ClassHeatmap(class_id=request.class_id)

    async def GetStoreStats(self, request: Any, context: Any) -> Any:
        raise ResourceExhausted(retry_after_s=2.5)


class FakeMastery(mastery_pb2_grpc.MasteryServiceServicer):
    async def SubscribeMastery(self, request: Any, context: Any) -> AsyncIterator[Any]:
        authorize_tenant(current_principal(), request.tenant_id)
        for i in range(3):
            yield envelope_pb2.Envelope(event_id=f"e{i}", tenant_id=request.tenant_id)
        if request.class_id == "fail-midway":
            raise InvalidArgument([("class_id", "gone")])


class FakeIngest(ingest_pb2_grpc.IngestServiceServicer):
    async def StreamEvents(self, request_iterator: Any, context: Any) -> None:  # type: ignore[override]
        # The coroutine style: write responses instead of yielding them.
        tenant = current_principal().tenant_id
        async for envelope in request_iterator:
            authorize_tenant(current_principal(), envelope.tenant_id or tenant)
            await context.write(ingest_pb2.ItemResult(event_id=envelope.event_id))


def make_server(grace_seconds: float = 2.0) -> GrpcServer:
    return create_server(
        ServerSettings(port=0, metrics_port=0, grace_seconds=grace_seconds),
        TOKENS,
        [
            ServiceBinding(
                REPORTING,
                reporting_pb2_grpc.add_ReportingServiceServicer_to_server,
                FakeReporting(),
            ),
            ServiceBinding(
                MASTERY,
                mastery_pb2_grpc.add_MasteryServiceServicer_to_server,
                FakeMastery(),  # type: ignore[abstract]
            ),
            ServiceBinding(
                INGEST,
                ingest_pb2_grpc.add_IngestServiceServicer_to_server,
                FakeIngest(),  # type: ignore[abstract]
            ),
        ],
    )


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    running = make_server()
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as open_channel:
        yield open_channel


def reporting(channel: grpc.aio.Channel) -> Any:
    return reporting_pb2_grpc.ReportingServiceStub(channel)


async def health_status(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    status: int = response.status
    return status


async def test_binds_a_free_port_when_asked_for_port_0(server: GrpcServer) -> None:
    assert server.port > 0


async def test_health_is_not_serving_until_set_serving(
    server: GrpcServer, channel: grpc.aio.Channel
) -> None:
    for name in ("", REPORTING, MASTERY):
        assert await health_status(channel, name) == health_pb2.HealthCheckResponse.NOT_SERVING

    await server.set_serving()

    for name in ("", REPORTING, MASTERY):
        assert await health_status(channel, name) == health_pb2.HealthCheckResponse.SERVING

    await server.set_serving(False)
    assert await health_status(channel, REPORTING) == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_services_without_a_token(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name async for response in call for s in response.list_services_response.service}

    assert {REPORTING, MASTERY, INGEST, "grpc.health.v1.Health"} <= names
    assert "grpc.reflection.v1alpha.ServerReflection" in names


async def test_reflection_describes_a_service(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=REPORTING)])
    )
    responses = [response async for response in call]

    assert responses[0].file_descriptor_response.file_descriptor_proto


async def test_a_call_without_a_token_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    request = reporting_pb2.GetLearnerProgressRequest(tenant_id=TENANT, learner_id="S1")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await reporting(channel).GetLearnerProgress(request)

    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("header", ["Bearer wrong-token", f"Basic {SERVICE_TOKEN}", "Bearer "])
async def test_an_unknown_token_is_unauthenticated(channel: grpc.aio.Channel, header: str) -> None:
    request = reporting_pb2.GetLearnerProgressRequest(tenant_id=TENANT, learner_id="S1")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await reporting(channel).GetLearnerProgress(request, metadata=(("authorization", header),))

    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert SERVICE_TOKEN not in (raised.value.details() or "")


async def test_a_valid_token_reaches_the_servicer(channel: grpc.aio.Channel) -> None:
    request = reporting_pb2.GetLearnerProgressRequest(tenant_id=TENANT, learner_id="S1")
    response = await reporting(channel).GetLearnerProgress(request, metadata=auth())

    assert response.learner_id == "S1"


async def test_another_tenant_is_permission_denied(channel: grpc.aio.Channel) -> None:
    request = reporting_pb2.GetLearnerProgressRequest(tenant_id="district-b", learner_id="S1")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await reporting(channel).GetLearnerProgress(request, metadata=auth())

    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_teacher_is_scoped_to_their_classes(channel: grpc.aio.Channel) -> None:
    stub = reporting(channel)
    own = reporting_pb2.GetClassHeatmapRequest(tenant_id=TENANT, class_id="class-1")
    other = reporting_pb2.GetClassHeatmapRequest(tenant_id=TENANT, class_id="class-2")

    assert (await stub.GetClassHeatmap(own, metadata=auth(TEACHER_TOKEN))).class_id == "class-1"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetClassHeatmap(other, metadata=auth(TEACHER_TOKEN))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A service token sees every class of its tenant.
    assert (await stub.GetClassHeatmap(other, metadata=auth())).class_id == "class-2"


async def test_invalid_argument_carries_bad_request_fields(channel: grpc.aio.Channel) -> None:
    request = reporting_pb2.GetLearnerProgressRequest(tenant_id=TENANT, learner_id="x")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await reporting(channel).GetLearnerProgress(request, metadata=auth())

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(raised.value) == ["learner_id"]
    assert bad_request_violations(raised.value) == [("learner_id", "must be an SIS id")]


async def test_resource_exhausted_carries_retry_info(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await reporting(channel).GetStoreStats(
            reporting_pb2.GetStoreStatsRequest(tenant_id=TENANT), metadata=auth()
        )

    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_after_seconds(raised.value) == 2.5
    assert bad_request_fields(raised.value) == []


async def test_an_unexpected_exception_is_a_generic_internal(channel: grpc.aio.Channel) -> None:
    request = reporting_pb2.GetLearnerProgressRequest(tenant_id=TENANT, learner_id="boom")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await reporting(channel).GetLearnerProgress(
            request, metadata=auth(**{"x-request-id": "req-internal-1"})
        )

    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "internal detail" not in (raised.value.details() or "")
    assert "req-internal-1" in (raised.value.details() or "")


async def test_the_request_id_is_echoed(channel: grpc.aio.Channel) -> None:
    request = reporting_pb2.GetLearnerProgressRequest(tenant_id=TENANT, learner_id="S1")
    call = reporting(channel).GetLearnerProgress(
        request, metadata=auth(**{"x-request-id": "req-123"})
    )
    await call

    assert ("x-request-id", "req-123") in tuple(await call.trailing_metadata())


async def test_a_request_id_is_made_when_missing_and_kept_on_errors(
    channel: grpc.aio.Channel,
) -> None:
    request = reporting_pb2.GetLearnerProgressRequest(tenant_id="district-b", learner_id="S1")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await reporting(channel).GetLearnerProgress(request, metadata=auth())

    trailing: Any = raised.value.trailing_metadata()
    ids = [value for key, value in trailing if key == "x-request-id"]
    assert len(ids) == 1 and len(ids[0]) == 32


async def test_a_server_stream_works_through_the_interceptor(channel: grpc.aio.Channel) -> None:
    stub = mastery_pb2_grpc.MasteryServiceStub(channel)
    call = stub.SubscribeMastery(
        mastery_pb2.SubscribeMasteryRequest(tenant_id=TENANT, class_id="class-1"),
        metadata=auth(**{"x-request-id": "req-stream"}),
    )

    assert [e.event_id async for e in call] == ["e0", "e1", "e2"]
    assert await call.code() == grpc.StatusCode.OK
    assert ("x-request-id", "req-stream") in tuple(await call.trailing_metadata())


async def test_a_server_stream_error_after_responses_keeps_its_details(
    channel: grpc.aio.Channel,
) -> None:
    stub = mastery_pb2_grpc.MasteryServiceStub(channel)
    call = stub.SubscribeMastery(
        mastery_pb2.SubscribeMasteryRequest(tenant_id=TENANT, class_id="fail-midway"),
        metadata=auth(),
    )
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for envelope in call:
            received.append(envelope.event_id)

    assert received == ["e0", "e1", "e2"]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(raised.value) == ["class_id"]


async def test_a_server_stream_checks_auth(channel: grpc.aio.Channel) -> None:
    stub = mastery_pb2_grpc.MasteryServiceStub(channel)
    call = stub.SubscribeMastery(mastery_pb2.SubscribeMasteryRequest(tenant_id=TENANT))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_bidirectional_stream_works_through_the_interceptor(
    channel: grpc.aio.Channel,
) -> None:
    stub = ingest_pb2_grpc.IngestServiceStub(channel)

    async def envelopes() -> AsyncIterator[Any]:
        for i in range(3):
            yield envelope_pb2.Envelope(event_id=f"e{i}", tenant_id=TENANT)

    call = stub.StreamEvents(envelopes(), metadata=auth())
    assert [r.event_id async for r in call] == ["e0", "e1", "e2"]

    wrong_tenant = stub.StreamEvents(
        iter([envelope_pb2.Envelope(event_id="x", tenant_id="district-b")]), metadata=auth()
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in wrong_tenant:
            pass
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_graceful_stop_flips_health_then_drains() -> None:
    server = make_server(grace_seconds=5.0)
    await server.start()
    await server.set_serving()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=REPORTING)
        )
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        in_flight = reporting(channel).GetClassHeatmap(
            reporting_pb2.GetClassHeatmapRequest(
                tenant_id=TENANT, class_id="class-1", page_token="slow"
            ),
            metadata=auth(),
        )
        await asyncio.sleep(0.1)  # let the slow call reach the servicer

        stopping = asyncio.create_task(server.stop())

        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()  # an open Watch would hold the drain for the whole grace period
        assert (await in_flight).class_id == "class-1"  # drained, not cut
        await stopping
        # Once stopping, readiness cannot come back.
        await server.set_serving()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await health_status(channel, REPORTING)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_stop_is_idempotent() -> None:
    server = make_server()
    await server.start()
    await server.stop()
    await server.stop()


async def test_a_taken_port_fails_loudly(server: GrpcServer) -> None:
    with pytest.raises(RuntimeError):
        create_server(ServerSettings(port=server.port, metrics_port=0), TOKENS, [])


async def test_the_metrics_endpoint_counts_calls(channel: grpc.aio.Channel) -> None:
    port = start_metrics_server(0)
    request = reporting_pb2.GetLearnerProgressRequest(tenant_id=TENANT, learner_id="S1")
    await reporting(channel).GetLearnerProgress(request, metadata=auth())

    text = await asyncio.to_thread(scrape, port)

    assert (
        'trellis_grpc_server_handled_total{grpc_code="OK",grpc_method="GetLearnerProgress",'
        f'grpc_service="{REPORTING}"}}'
    ) in text
    assert "trellis_grpc_server_handling_seconds_count" in text


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


async def test_run_until_signal_stops_gracefully_on_sigterm() -> None:
    server = make_server()
    stopped: list[str] = []

    async def on_stop() -> None:
        stopped.append("closed")

    running = asyncio.create_task(run_until_signal(server, on_stop))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        status = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=5
        )
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING

        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(running, timeout=5)

    assert stopped == ["closed"]
