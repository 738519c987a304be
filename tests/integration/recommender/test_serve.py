"""`python -m trellis.recommender serve` as a process: SERVING once the replicas are loaded, an
honest UNAVAILABLE while mastery is down, a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TEST_PSEUDONYM_KEY, TEST_TENANT
from tests.integration.recommender.test_grpc_recommender import catalog_records, produce
from trellis.common.pb.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from trellis.common.settings import Settings
from trellis.recommender.adapters.grpc import SERVICE_NAME

TOOL = (("authorization", "Bearer tool-token"),)


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    env.update(
        {
            "TRELLIS_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "TRELLIS_KAFKA__TOPICS__PREFIX": settings.kafka.topics.prefix,
            "TRELLIS_SERVICES__RECOMMENDER__PORT": "0",
            "TRELLIS_SERVICES__RECOMMENDER__METRICS_PORT": "0",
            # nothing listens there: mastery is down for the whole test
            "TRELLIS_RECOMMENDER__MASTERY_ADDRESS": "127.0.0.1:1",
            "TRELLIS_RECOMMENDER__MASTERY_DEADLINE_S": "0.3",
            "TRELLIS_AUTH__TOKENS": json.dumps(
                {"tool-token": {"tenant_id": TEST_TENANT, "role": "service"}}
            ),
            "TRELLIS_PSEUDONYM__KEYS": json.dumps({TEST_TENANT: {"1": TEST_PSEUDONYM_KEY}}),
        }
    )
    return env


def _wait_for(lines: queue.Queue[dict[str, object]], event: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    seen: list[object] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line.get("event"))
        if line.get("event") == event:
            return line
    raise AssertionError(f"no {event!r} log line; saw {seen[-20:]}")


def test_serve_loads_the_replica_answers_and_stops_on_sigterm(settings: Settings) -> None:
    produce(settings, "catalog", catalog_records())
    process = subprocess.Popen(
        [sys.executable, "-m", "trellis.recommender", "serve"],
        env=_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[dict[str, object]] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                lines.put(json.loads(line))
            except ValueError:
                lines.put({"event": line.strip()})

    threading.Thread(target=pump, daemon=True).start()
    try:
        port = _wait_for(lines, "recommender serving")["port"]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            status = (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
                .status
            )
            assert status == health_pb2.HealthCheckResponse.SERVING
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            started = time.monotonic()
            try:
                stub.NextActivities(
                    recommender_pb2.NextActivitiesRequest(tenant_id=TEST_TENANT, learner_id="s"),
                    metadata=TOOL,
                    timeout=10,
                )
                raise AssertionError("mastery is down: the answer must be UNAVAILABLE")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            assert time.monotonic() - started < 5
            try:
                stub.LearningPath(
                    recommender_pb2.LearningPathRequest(
                        tenant_id=TEST_TENANT, learner_id="s", goal_skill_id="nope"
                    ),
                    metadata=TOOL,
                    timeout=10,
                )
                raise AssertionError("unknown goal")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
