"""Running the mastery worker as a process in integration tests: its environment, a free port,
starting it, waiting until it answers SERVING, and stopping it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TEST_PSEUDONYM_KEY, TEST_TENANT
from trellis.common.settings import Settings

TOKEN = "mastery-test-token"
# Narrower principals, for the scope checks of the read API on a worker process.
SCOPED_TOKENS = {
    "mastery-teacher-7a": {"tenant_id": TEST_TENANT, "role": "teacher", "classes": ["class-7a"]},
    "mastery-admin-school-1": {
        "tenant_id": TEST_TENANT,
        "role": "district_admin",
        "schools": ["school-1"],
    },
    "mastery-admin-school-2": {
        "tenant_id": TEST_TENANT,
        "role": "district_admin",
        "schools": ["school-2"],
    },
}
STARTUP_TIMEOUT_S = 40.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def worker_env(settings: Settings, data_dir: Path, port: int, metrics_port: int) -> dict[str, str]:
    kafka = settings.kafka
    mastery = settings.mastery
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",  # a worker killed with SIGKILL leaves its whole log
        "TRELLIS_LOG_LEVEL": "INFO",
        "TRELLIS_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "TRELLIS_KAFKA__TOPICS__PREFIX": kafka.topics.prefix,
        "TRELLIS_KAFKA__TOPICS__PARTITIONS": str(kafka.topics.partitions),
        "TRELLIS_KAFKA__SESSION_TIMEOUT_MS": str(kafka.session_timeout_ms),
        "TRELLIS_KAFKA__HEARTBEAT_INTERVAL_MS": str(kafka.heartbeat_interval_ms),
        "TRELLIS_KAFKA__REQUEST_TIMEOUT_MS": str(kafka.request_timeout_ms),
        "TRELLIS_KAFKA__DELIVERY_TIMEOUT_MS": str(kafka.delivery_timeout_ms),
        "TRELLIS_MASTERY__CONSUMER_GROUP": mastery.consumer_group,
        "TRELLIS_MASTERY__BROKER_SESSION_TIMEOUT_S": str(mastery.broker_session_timeout_s),
        "TRELLIS_MASTERY__BROKER_HEARTBEAT_INTERVAL_S": str(mastery.broker_heartbeat_interval_s),
        "TRELLIS_MASTERY__DATA_DIR": str(data_dir),
        "TRELLIS_SERVICES__MASTERY__PORT": str(port),
        "TRELLIS_SERVICES__MASTERY__METRICS_PORT": str(metrics_port),
        "TRELLIS_SERVICES__MASTERY__GRACE_SECONDS": "2",
        "TRELLIS_PSEUDONYM__KEYS": json.dumps({TEST_TENANT: {"1": TEST_PSEUDONYM_KEY}}),
        "TRELLIS_AUTH__TOKENS": json.dumps(
            {TOKEN: {"tenant_id": TEST_TENANT, "role": "service"}, **SCOPED_TOKENS}
        ),
    }


class Worker:
    def __init__(
        self, process: subprocess.Popen[bytes], log: Path, port: int, health_port: int | None = None
    ) -> None:
        self.process = process
        self.log = log
        self.port = port
        # Where health answers in plaintext: the gRPC port, unless it serves TLS.
        self.health_port = health_port or port

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-20_000:]


def launch_worker(
    settings: Settings, data_dir: Path, log: Path, env: Mapping[str, str] | None = None
) -> Worker:
    """`python -m trellis.mastery worker` on free ports, `env` adding to `worker_env`; a
    `TRELLIS_SERVICES__MASTERY__HEALTH_PORT` there is where `wait_until_serving` asks."""
    port = free_port()
    full_env = {**worker_env(settings, data_dir, port, free_port()), **(env or {})}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "trellis.mastery", "worker"],
            env=full_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    health_port = full_env.get("TRELLIS_SERVICES__MASTERY__HEALTH_PORT")
    return Worker(process, log, port, int(health_port) if health_port else None)


def stop_worker(worker: Worker) -> None:
    """SIGTERM, then SIGKILL if it has not stopped within 20 s."""
    worker.process.terminate()
    try:
        worker.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        worker.process.wait()


@contextmanager
def running_worker(
    settings: Settings, data_dir: Path, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[Worker]:
    """A worker from `launch_worker`, SERVING when this yields, stopped at the end."""
    worker = launch_worker(settings, data_dir, log, env)
    try:
        wait_until_serving(worker)
        yield worker
    finally:
        stop_worker(worker)


def wait_until_serving(worker: Worker) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with grpc.insecure_channel(f"127.0.0.1:{worker.health_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert worker.process.poll() is None, f"worker exited early:\n{worker.output()}"
            try:
                status = health.Check(
                    health_pb2.HealthCheckRequest(service="trellis.mastery.v1.MasteryService"),
                    timeout=1.0,
                ).status
            except grpc.RpcError:
                status = None
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.2)
    pytest.fail(f"worker not SERVING within {STARTUP_TIMEOUT_S}s:\n{worker.output()}")
