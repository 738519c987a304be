"""A Trellis service as its own process for a benchmark (as in production), and the wait until it
answers SERVING on the gRPC health service."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
# The benchmarks' district: its one service token and pseudonym key.
TENANT = "bench-district"
TOKEN = "bench-token"
KEY = "bench-pseudonym-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(
    service: str,
    log_path: Path,
    *,
    bootstrap: str,
    prefix: str,
    port: int,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m trellis.<service> serve` on `port`, with the service token of TENANT and its
    pseudonym key, the topics under `prefix`, warnings only, logging to `log_path`; `env` adds or
    overrides settings."""
    name = service.upper()
    settings = {
        "TRELLIS_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "TRELLIS_KAFKA__TOPICS__PREFIX": prefix,
        "TRELLIS_AUTH__TOKENS": json.dumps({TOKEN: {"tenant_id": TENANT, "role": "service"}}),
        "TRELLIS_PSEUDONYM__KEYS": json.dumps({TENANT: {"1": KEY}}),
        f"TRELLIS_SERVICES__{name}__PORT": str(port),
        f"TRELLIS_SERVICES__{name}__METRICS_PORT": str(free_port()),
        "TRELLIS_LOG_LEVEL": "WARNING",
        **(env or {}),
    }
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", f"trellis.{service}", "serve"],
            env={**os.environ, **settings},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


def wait_serving(target: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Until the process at `target` answers SERVING; raises if it exits or takes too long."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service for {target} exited with {process.returncode}")
        with grpc.insecure_channel(target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=2
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.2)
    raise TimeoutError(f"the service for {target} did not turn SERVING in {timeout_s} s")
