"""One attempt through the whole system: ingest -> Kafka -> mastery (BKT) -> Kafka -> reporting
(chDB) -> a reporting query. Every service runs as its own process, started by the same script as
`make up`, against the test broker; the test talks gRPC only."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from tests.conftest import TEST_PSEUDONYM_KEY, TEST_TENANT, make_test_settings, unique_name
from trellis.common.kafka import ensure_topics
from trellis.common.pb.events.v1 import envelope_pb2, mastery_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.pb.reporting.v1 import reporting_pb2, reporting_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "mastery", "recommender", "reporting")
TOKEN = "e2e-service-token"
ADMIN_TOKEN = "e2e-admin-token"

# One correct answer from the default BKT parameters (prior 0.3, learn 0.1, guess 0.2, slip 0.1):
#   posterior = 0.3*0.9 / (0.3*0.9 + 0.7*0.2) = 0.27/0.41 = 0.658536585...
#   after the learning step: 0.658536585 + (1 - 0.658536585)*0.1 = 0.692682926829...
EXPECTED_P_MASTERED = 0.6926829268292683


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, int]]:
    prefix = unique_name("e2e")
    settings = make_test_settings(prefix)
    ensure_topics(settings.kafka)
    ports = {service: free_port() for service in SERVICES}
    env = {
        **os.environ,
        "STACK_RUN_DIR": str(tmp_path / "run"),
        "STACK_HEALTH_TIMEOUT": "120",
        "TRELLIS_KAFKA__TOPICS__PREFIX": settings.kafka.topics.prefix,
        "TRELLIS_KAFKA__TOPICS__PARTITIONS": "2",
        "TRELLIS_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "TRELLIS_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "TRELLIS_MASTERY__CONSUMER_GROUP": settings.mastery.consumer_group,
        "TRELLIS_MASTERY__BROKER_SESSION_TIMEOUT_S": "6",
        "TRELLIS_MASTERY__BROKER_HEARTBEAT_INTERVAL_S": "1",
        "TRELLIS_MASTERY__DATA_DIR": str(tmp_path / "mastery"),
        "TRELLIS_REPORTING__CONSUMER_GROUP": settings.reporting.consumer_group,
        "TRELLIS_REPORTING__BATCH_MAX_SECONDS": "0.2",
        "TRELLIS_CLICKHOUSE__CHDB_PATH": str(tmp_path / "chdb"),
        "TRELLIS_AUTH__TOKENS": (
            f'{{"{TOKEN}": {{"tenant_id": "{TEST_TENANT}", "role": "service"}},'
            f' "{ADMIN_TOKEN}": {{"tenant_id": "{TEST_TENANT}", "role": "district_admin"}}}}'
        ),
        "TRELLIS_PSEUDONYM__KEYS": f'{{"{TEST_TENANT}": {{"1": "{TEST_PSEUDONYM_KEY}"}}}}',
    }
    for service, port in ports.items():
        env[f"TRELLIS_SERVICES__{service.upper()}__PORT"] = str(port)
        env[f"TRELLIS_SERVICES__{service.upper()}__METRICS_PORT"] = str(free_port())
    script = str(ROOT / "deploy/local/stack.sh")
    try:
        subprocess.run([script, "services-up"], env=env, check=True, timeout=180)
        yield ports
    finally:
        subprocess.run([script, "services-down"], env=env, check=True, timeout=180)
    leftovers = list((tmp_path / "run").glob("*.pid"))
    assert not leftovers, f"services still running: {leftovers}"


def wait_for_progress(
    reporting: reporting_pb2_grpc.ReportingServiceStub, learner_id: str, timeout: float
) -> reporting_pb2.LearnerProgress:
    deadline = time.monotonic() + timeout
    while True:
        progress = reporting.GetLearnerProgress(
            reporting_pb2.GetLearnerProgressRequest(tenant_id=TEST_TENANT, learner_id=learner_id),
            metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),),
            timeout=5,
        )
        if progress.skills or time.monotonic() > deadline:
            return progress
        time.sleep(0.5)


def test_one_attempt_reaches_the_report(stack: dict[str, int]) -> None:
    attempt = envelope_pb2.Envelope(
        event_id="e2e-attempt-1", learner_id="sis-e2e-1", school_id="s1", class_id="c1"
    )
    attempt.occurred_at.FromDatetime(datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
    attempt.item_attempted.item_id = "frac.add-like.q1"
    attempt.item_attempted.skill_ids.append("frac.add-like")
    attempt.item_attempted.correct = True

    with grpc.insecure_channel(f"127.0.0.1:{stack['ingest']}") as channel:
        reply = ingest_pb2_grpc.IngestServiceStub(channel).RecordEvents(
            ingest_pb2.RecordEventsRequest(tenant_id=TEST_TENANT, events=[attempt]),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
            timeout=30,
        )
    assert [r.status for r in reply.results] == [ingest_pb2.ITEM_STATUS_ACCEPTED]

    with grpc.insecure_channel(f"127.0.0.1:{stack['reporting']}") as channel:
        progress = wait_for_progress(
            reporting_pb2_grpc.ReportingServiceStub(channel), "sis-e2e-1", timeout=90
        )

    assert [s.skill_id for s in progress.skills] == ["frac.add-like"]
    skill = progress.skills[0]
    assert skill.p_mastered == pytest.approx(EXPECTED_P_MASTERED, abs=1e-12)
    assert skill.level == mastery_pb2.MASTERY_LEVEL_PRACTICING
    assert skill.attempts == 1
