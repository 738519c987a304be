"""The interceptor's outcome bookkeeping: codes in metrics and logs, whatever way a call ends."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
import structlog
from prometheus_client import REGISTRY

from trellis.common.grpc import GrpcServer, ServiceBinding, create_server, current_principal
from trellis.common.logging import configure_logging
from trellis.common.pb.events.v1 import envelope_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from trellis.common.pb.reporting.v1 import reporting_pb2, reporting_pb2_grpc
from trellis.common.settings import Principal, ServerSettings

TENANT = "district-log"
TOKEN = "interceptor-token-not-secret"
REPORTING = reporting_pb2.DESCRIPTOR.services_by_name["ReportingService"].full_name
MASTERY = mastery_pb2.DESCRIPTOR.services_by_name["MasteryService"].full_name
METADATA = (("authorization", f"Bearer {TOKEN}"),)


class Reporting(reporting_pb2_grpc.ReportingServiceServicer):
    async def GetLearnerProgress(self, request: Any, context: Any) -> Any:
        if request.learner_id == "bug":
            raise KeyError("bug")
        if request.learner_id == "slow":
            await asyncio.sleep(5)
        if request.learner_id == "downstream":
            # What a stub raises when the service it calls is down.
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down", None
            )
        # Slow enough that concurrent calls interleave.
        await asyncio.sleep(0.05)
        return reporting_pb2.LearnerProgress(learner_id=current_principal().tenant_id)

    async def GetClassHeatmap(self, request: Any, context: Any) -> Any:
        # A servicer may still abort by itself; the interceptor must record that code.
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "class is archived")

    async def GetStoreStats(self, request: Any, context: Any) -> Any:
        context.set_code(grpc.StatusCode.NOT_FOUND)
        context.set_details("no store")
        return reporting_pb2.StoreStats()


class Mastery(mastery_pb2_grpc.MasteryServiceServicer):
    async def SubscribeMastery(self, request: Any, context: Any) -> AsyncIterator[Any]:
        while True:
            yield envelope_pb2.Envelope(event_id="tick")
            await asyncio.sleep(0.01)


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("INFO")

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]

    yield lines
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    running = create_server(
        ServerSettings(port=0, metrics_port=0),
        {TOKEN: Principal(tenant_id=TENANT, role="service")},
        [
            ServiceBinding(
                REPORTING, reporting_pb2_grpc.add_ReportingServiceServicer_to_server, Reporting()
            ),
            ServiceBinding(
                MASTERY,
                mastery_pb2_grpc.add_MasteryServiceServicer_to_server,
                Mastery(),  # type: ignore[abstract]
            ),
        ],
    )
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as open_channel:
        yield open_channel


def handled(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "trellis_grpc_server_handled_total",
        {
            "grpc_service": REPORTING if method.startswith("Get") else MASTERY,
            "grpc_method": method,
            "grpc_code": code,
        },
    )
    return value or 0.0


async def test_each_call_logs_one_line_with_its_own_context(
    channel: grpc.aio.Channel, json_logs: Any
) -> None:
    stub = reporting_pb2_grpc.ReportingServiceStub(channel)
    request = reporting_pb2.GetLearnerProgressRequest(tenant_id=TENANT, learner_id="S-secret-sis")

    await asyncio.gather(
        *(
            stub.GetLearnerProgress(request, metadata=(*METADATA, ("x-request-id", f"req-{i}")))
            for i in range(5)
        )
    )

    rpc_lines = [line for line in json_logs() if line["event"] == "rpc"]
    assert sorted(line["request_id"] for line in rpc_lines) == [f"req-{i}" for i in range(5)]
    for line in rpc_lines:
        assert line["tenant_id"] == TENANT
        assert line["method"] == f"{REPORTING}/GetLearnerProgress"
        assert line["code"] == "OK"
        assert line["duration_ms"] >= 40
        assert line["level"] == "info" and line["logger"] == "trellis.grpc"
        assert "timestamp" in line


async def test_logs_never_hold_the_token_or_the_request(
    channel: grpc.aio.Channel, json_logs: Any
) -> None:
    stub = reporting_pb2_grpc.ReportingServiceStub(channel)
    request = reporting_pb2.GetLearnerProgressRequest(tenant_id=TENANT, learner_id="S-secret-sis")
    await stub.GetLearnerProgress(request, metadata=METADATA)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetLearnerProgress(request, metadata=(("authorization", "Bearer guessed"),))

    # The server logs a call once it has answered it: under load, after the client has the answer.
    logged: list[Any] = []
    for _ in range(250):
        logged += json_logs()
        if "UNAUTHENTICATED" in json.dumps(logged):
            break
        await asyncio.sleep(0.02)
    text = json.dumps(logged)
    assert TOKEN not in text and "guessed" not in text and "S-secret-sis" not in text
    assert "UNAUTHENTICATED" in text


async def test_an_unexpected_exception_is_logged_with_traceback_and_request_id(
    channel: grpc.aio.Channel, json_logs: Any
) -> None:
    stub = reporting_pb2_grpc.ReportingServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetLearnerProgress(
            reporting_pb2.GetLearnerProgressRequest(tenant_id=TENANT, learner_id="bug"),
            metadata=(*METADATA, ("x-request-id", "req-bug")),
        )

    assert raised.value.code() == grpc.StatusCode.INTERNAL
    (error,) = [line for line in json_logs() if line["level"] == "error"]
    assert error["request_id"] == "req-bug"
    assert "KeyError" in error["exception"]


async def test_codes_set_by_the_servicer_are_counted(channel: grpc.aio.Channel) -> None:
    stub = reporting_pb2_grpc.ReportingServiceStub(channel)
    aborted, set_code = (
        handled("GetClassHeatmap", "FAILED_PRECONDITION"),
        handled("GetStoreStats", "NOT_FOUND"),
    )

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetClassHeatmap(reporting_pb2.GetClassHeatmapRequest(), metadata=METADATA)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetStoreStats(reporting_pb2.GetStoreStatsRequest(), metadata=METADATA)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND

    assert handled("GetClassHeatmap", "FAILED_PRECONDITION") == aborted + 1
    assert handled("GetStoreStats", "NOT_FOUND") == set_code + 1


async def test_a_cancelled_stream_is_counted_as_cancelled(channel: grpc.aio.Channel) -> None:
    before = handled("SubscribeMastery", "CANCELLED")
    call = mastery_pb2_grpc.MasteryServiceStub(channel).SubscribeMastery(
        mastery_pb2.SubscribeMasteryRequest(tenant_id=TENANT), metadata=METADATA
    )
    first: Any = await call.read()
    assert first.event_id == "tick"

    call.cancel()

    await wait_for_count("SubscribeMastery", "CANCELLED", before + 1)


async def test_health_probes_need_no_token_and_stay_out_of_info_logs(
    server: GrpcServer, channel: grpc.aio.Channel, json_logs: Any
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    await server.set_serving()
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())

    assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert not [line for line in json_logs() if line.get("event") == "rpc"]


async def wait_for_count(method: str, code: str, expected: float) -> None:
    for _ in range(200):
        if handled(method, code) == expected:
            return
        await asyncio.sleep(0.01)
    assert handled(method, code) == expected


async def test_a_passed_deadline_is_counted_as_such(channel: grpc.aio.Channel) -> None:
    before = handled("GetLearnerProgress", "DEADLINE_EXCEEDED")
    stub = reporting_pb2_grpc.ReportingServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetLearnerProgress(
            reporting_pb2.GetLearnerProgressRequest(learner_id="slow"),
            metadata=METADATA,
            timeout=0.2,
        )

    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_for_count("GetLearnerProgress", "DEADLINE_EXCEEDED", before + 1)


async def test_a_transient_downstream_failure_stays_retryable(channel: grpc.aio.Channel) -> None:
    stub = reporting_pb2_grpc.ReportingServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetLearnerProgress(
            reporting_pb2.GetLearnerProgressRequest(learner_id="downstream"), metadata=METADATA
        )

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
