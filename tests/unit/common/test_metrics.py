"""trellis.common.metrics: Prometheus on its own port, serving the shared RPC metrics."""

from __future__ import annotations

import asyncio
import urllib.request

from trellis.common.metrics import RPC_HANDLED, RPC_LATENCY, start_metrics_server


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


async def test_port_0_binds_a_free_port_and_serves_the_rpc_metrics() -> None:
    port = start_metrics_server(0)
    RPC_HANDLED.labels("test.v1.Metrics", "Ping", "OK").inc()
    RPC_LATENCY.labels("test.v1.Metrics", "Ping").observe(0.003)

    text = await asyncio.to_thread(scrape, port)

    assert port > 0
    assert (
        'trellis_grpc_server_handled_total{grpc_code="OK",grpc_method="Ping",'
        'grpc_service="test.v1.Metrics"} 1.0'
    ) in text
    assert (
        'trellis_grpc_server_handling_seconds_bucket{grpc_method="Ping",'
        'grpc_service="test.v1.Metrics",le="0.005"} 1.0'
    ) in text


def test_two_servers_get_two_ports() -> None:
    assert start_metrics_server(0) != start_metrics_server(0)
