"""The project's own Kafka broker (deploy/local/kafka.sh) and topic creation on it.

`test_script_runs_a_second_broker` starts a broker of its own on free ports in a temporary
KAFKA_HOME (so it never touches the broker the rest of the suite uses), creates the topics on it
with `python -m trellis.common.kafka`, and stops it. The `ensure_topics` tests use the suite's
broker (TRELLIS_KAFKA__BOOTSTRAP_SERVERS).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from tests.conftest import make_test_settings, unique_name
from trellis.common.kafka import ALL_TOPICS, COMPACTED, ensure_topics
from trellis.common.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "local" / "kafka.sh"
START_TIMEOUT_S = 240  # a cold machine resolves the jars with Maven first
STOP_TIMEOUT_S = 60


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_pair(first: int = 19192, last: int = 19990) -> tuple[int, int]:
    """Two adjacent free ports below the ephemeral range (19192/19193 unless taken)."""
    for port in range(first, last, 2):
        if port_free(port) and port_free(port + 1):
            return port, port + 1
    raise RuntimeError(f"no free port pair in {first}..{last}")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose here.
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class Broker:
    port: int
    controller_port: int
    home: Path
    env: dict[str, str]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return int((self.home / "kafka.pid").read_text().strip())

    def script(self, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), command],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def second_broker(tmp_path: Path) -> Iterator[Broker]:
    port, controller_port = free_port_pair()
    broker = Broker(
        port=port,
        controller_port=controller_port,
        home=tmp_path / "kafka",
        env={
            **os.environ,
            "KAFKA_PORT": str(port),
            "KAFKA_CONTROLLER_PORT": str(controller_port),
            "KAFKA_HOME": str(tmp_path / "kafka"),
            "KAFKA_START_TIMEOUT": "90",
            "KAFKA_STOP_TIMEOUT": "30",
            "PYTHON": sys.executable,
        },
    )
    pid: int | None = None
    try:
        yield broker
    finally:
        try:
            pid = broker.pid
        except (OSError, ValueError):
            pid = None
        try:
            broker.script("stop", timeout=STOP_TIMEOUT_S)
        finally:
            if pid is not None and alive(pid):
                os.kill(pid, 9)


def wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_script_runs_a_second_broker(second_broker: Broker) -> None:
    broker = second_broker
    began = time.monotonic()
    started = broker.script("start", timeout=START_TIMEOUT_S)
    assert started.returncode == 0, f"start failed:\n{started.stdout}\n{started.stderr}"
    print(f"kafka.sh start took {time.monotonic() - began:.1f} s: {started.stdout.strip()}")
    pid = broker.pid
    assert alive(pid)
    assert f"ready on {broker.bootstrap}" in started.stdout

    status = broker.script("status", timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr

    again = broker.script("start", timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already running" in again.stdout
    assert broker.pid == pid

    # The topics of DESIGN.md section 3, created the way the stack creates them.
    topics_env = {**broker.env, "TRELLIS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap}
    created = subprocess.run(
        [sys.executable, "-m", "trellis.common.kafka"],
        env=topics_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    assert "(5 created)" in created.stdout, created.stdout

    names = Settings().kafka.topics  # same environment as the subprocess apart from the bootstrap
    expected = {kind: names.name(kind) for kind in ALL_TOPICS}
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10_000)
    try:
        # create_topics returns once the controller committed; the broker's metadata may lag.
        wanted = set(expected.values())
        deadline = time.monotonic() + 15
        while not wanted <= set(admin.list_topics()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert wanted <= set(admin.list_topics())
        described = admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, name, configs={"cleanup.policy": None})
                for name in expected.values()
            ]
        )["topic"]
    finally:
        admin.close()
    for kind, name in expected.items():
        policy = described[name]["cleanup.policy"]["value"]
        assert policy == ("compact" if kind in COMPACTED else "delete"), (kind, policy)

    began = time.monotonic()
    stopped = broker.script("stop", timeout=STOP_TIMEOUT_S)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    print(f"kafka.sh stop took {time.monotonic() - began:.1f} s")
    assert wait_gone(pid), f"broker pid {pid} still alive after stop"
    assert not (broker.home / "kafka.pid").exists()
    assert not port_open(broker.port)
    assert broker.script("status", timeout=60).returncode == 3
    assert broker.script("stop", timeout=60).returncode == 0  # stopping a stopped broker is fine


def test_ensure_topics_is_idempotent(settings: Settings) -> None:
    """The `settings` fixture already created this test's topics: a second pass creates nothing."""
    assert ensure_topics(settings.kafka) == []
    wanted = {settings.kafka.topics.name(kind) for kind in ALL_TOPICS}
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        deadline = time.monotonic() + 15  # the broker's metadata may lag the controller a moment
        while not wanted <= set(admin.list_topics()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert wanted <= set(admin.list_topics())
    finally:
        admin.close()


def test_ensure_topics_creates_all_then_nothing() -> None:
    fresh = make_test_settings(unique_name("t"))
    names = sorted(fresh.kafka.topics.name(kind) for kind in ALL_TOPICS)
    try:
        assert sorted(ensure_topics(fresh.kafka)) == names
        assert ensure_topics(fresh.kafka) == []
    finally:
        admin = KafkaAdminClient(bootstrap_servers=fresh.kafka.bootstrap_servers)
        try:
            admin.delete_topics(names)
        finally:
            admin.close()


def test_script_refuses_a_taken_port_and_an_old_java(tmp_path: Path) -> None:
    """Clear errors before any JVM starts: a port held by someone else, a Java older than 17."""
    port, controller_port = free_port_pair(19600)
    base = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller_port),
        "KAFKA_HOME": str(tmp_path / "kafka"),
    }
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        taken = subprocess.run(
            [str(SCRIPT), "start"], env=base, capture_output=True, text=True, timeout=STOP_TIMEOUT_S
        )
    assert taken.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in taken.stderr

    old_java = tmp_path / "java"
    old_java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    old_java.chmod(0o755)
    refused = subprocess.run(
        [str(SCRIPT), "start"],
        env={**base, "JAVA": str(old_java)},
        capture_output=True,
        text=True,
        timeout=STOP_TIMEOUT_S,
    )
    assert refused.returncode == 1
    assert "needs Java 17 or newer" in refused.stderr
    assert "11.0.2" in refused.stderr
    assert not (tmp_path / "kafka" / "kafka.pid").exists()
