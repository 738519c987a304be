"""Prometheus metrics on their own port, and the RPC metrics every gRPC server shares.

Names follow go-grpc-prometheus (`grpc_server_handled_total`, `grpc_server_handling_seconds`) with
a `trellis_` prefix, so the usual dashboards and alerts apply after a rename.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

__all__ = ["RPC_HANDLED", "RPC_LATENCY", "start_metrics_server"]

RPC_HANDLED = Counter(
    "trellis_grpc_server_handled",
    "RPCs completed on the server, by service, method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_LATENCY = Histogram(
    "trellis_grpc_server_handling_seconds",
    "Time from the start of an RPC's handler to its end, by service and method.",
    ["grpc_service", "grpc_method"],
    # From sub-millisecond reads up to batched ingest calls and slow reports.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> int:
    """Serve /metrics over HTTP in a daemon thread; returns the bound port (0: any free one)."""
    server, _thread = start_http_server(port, addr=host)
    bound: int = server.server_port
    return bound
