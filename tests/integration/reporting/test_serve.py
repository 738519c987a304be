"""`python -m trellis.reporting serve` as a process: ready when it is, answers, stops cleanly."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaAdminClient

from tests.conftest import TEST_PSEUDONYM_KEY, TEST_TENANT
from tests.integration.reporting.test_sink import mastery_updated, produce
from trellis.common.kafka import create_producer
from trellis.common.pb.reporting.v1 import reporting_pb2, reporting_pb2_grpc
from trellis.common.settings import Settings
from trellis.reporting.adapters.grpc import SERVICE_NAME

ADMIN = (("authorization", "Bearer admin-token"),)


def _env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS_")}
    env.update(
        {
            "TRELLIS_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "TRELLIS_KAFKA__TOPICS__PREFIX": settings.kafka.topics.prefix,
            "TRELLIS_KAFKA__TOPICS__PARTITIONS": str(settings.kafka.topics.partitions),
            "TRELLIS_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "TRELLIS_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
            "TRELLIS_REPORTING__CONSUMER_GROUP": settings.reporting.consumer_group,
            "TRELLIS_REPORTING__BATCH_MAX_SECONDS": "0.2",
            "TRELLIS_CLICKHOUSE__CHDB_PATH": str(tmp_path / "chdb"),
            "TRELLIS_SERVICES__REPORTING__PORT": "0",
            "TRELLIS_SERVICES__REPORTING__METRICS_PORT": "0",
            "TRELLIS_AUTH__TOKENS": json.dumps(
                {"admin-token": {"tenant_id": TEST_TENANT, "role": "district_admin"}}
            ),
            "TRELLIS_PSEUDONYM__KEYS": json.dumps({TEST_TENANT: {"1": TEST_PSEUDONYM_KEY}}),
        }
    )
    return env


def _lines(process: subprocess.Popen[str]) -> queue.Queue[dict[str, object]]:
    """JSON log lines of the process, read in a thread so that its pipe never fills."""
    lines: queue.Queue[dict[str, object]] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                lines.put(json.loads(line))
            except ValueError:
                lines.put({"event": line.strip()})

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for(
    lines: queue.Queue[dict[str, object]], event: str, seen: list[dict[str, object]]
) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if line.get("event") == event:
            return line
    raise AssertionError(f"no {event!r} log line; saw {[x.get('event') for x in seen][-20:]}")


def test_serve_reports_health_answers_and_stops_on_sigterm(
    settings: Settings, tmp_path: Path
) -> None:
    producer = create_producer(settings.kafka)
    try:
        produce(
            producer, settings.kafka.topics.name("mastery"), [mastery_updated(n) for n in range(25)]
        )
    finally:
        producer.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "trellis.reporting", "serve"],
        env=_env(settings, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[dict[str, object]] = []
    try:
        lines = _lines(process)
        port = _wait_for(lines, "grpc server started", seen)["port"]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reports = reporting_pb2_grpc.ReportingServiceStub(channel)
            deadline = time.monotonic() + 60
            rows: dict[str, int] = {}
            while rows.get("mastery_history") != 25 and time.monotonic() < deadline:
                status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME)).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    stats = reports.GetStoreStats(
                        reporting_pb2.GetStoreStatsRequest(tenant_id=TEST_TENANT), metadata=ADMIN
                    )
                    rows = {t.table: t.rows for t in stats.tables}
                time.sleep(0.2)
            assert rows.get("mastery_history") == 25, rows

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        _wait_for(lines, "reporting stopped", seen)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    events = [line.get("event") for line in seen]
    assert events.index("store migrated") < events.index("sink started")
    assert events.index("stop signal received") < events.index("sink stopped")
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        group = settings.reporting.consumer_group
        committed = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    mastery = settings.kafka.topics.name("mastery")
    assert sum(meta.offset for tp, meta in committed.items() if tp.topic == mastery) == 25
