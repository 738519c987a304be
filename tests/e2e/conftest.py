"""The `stack` fixture of the end-to-end tests: the four services as processes, started by the same
script as `make up` (deploy/local/stack.sh services-up), on unique topics of the test broker."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_PSEUDONYM_KEY, TEST_TENANT, make_test_settings, unique_name
from trellis.common.kafka import ensure_topics

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "mastery", "recommender", "reporting")
TOKEN = "e2e-service-token"
ADMIN_TOKEN = "e2e-admin-token"
TEACHER_TOKEN = "e2e-teacher-token"
TEACHER_CLASS = "c-e2e-teacher"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def print_log_tails(run_dir: Path, lines: int = 60) -> None:
    """Each service's warnings and errors, then its last lines (mostly the stop): pytest shows
    them beside a failed test, and CI keeps only that output."""
    for log in sorted(run_dir.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()
        noted = [line for line in text if re.search(r"warning|error|traceback", line, re.I)]
        print(f"--- {log.name}", *noted[-lines:], "[...]", *text[-10:], sep="\n")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, int]]:
    prefix = unique_name("e2e")
    settings = make_test_settings(prefix)
    ensure_topics(settings.kafka)
    ports = {service: free_port() for service in SERVICES}
    tokens = {
        TOKEN: {"tenant_id": TEST_TENANT, "role": "service"},
        ADMIN_TOKEN: {"tenant_id": TEST_TENANT, "role": "district_admin"},
        TEACHER_TOKEN: {"tenant_id": TEST_TENANT, "role": "teacher", "classes": [TEACHER_CLASS]},
    }
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
        "TRELLIS_AUTH__TOKENS": json.dumps(tokens),
        "TRELLIS_PSEUDONYM__KEYS": json.dumps({TEST_TENANT: {"1": TEST_PSEUDONYM_KEY}}),
        # The recommender reads mastery as a service, as deployed (docs/deployment.md).
        "TRELLIS_RECOMMENDER__MASTERY_TOKEN": TOKEN,
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
        print_log_tails(tmp_path / "run")
    leftovers = list((tmp_path / "run").glob("*.pid"))
    assert not leftovers, f"services still running: {leftovers}"
