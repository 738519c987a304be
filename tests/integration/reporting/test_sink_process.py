"""The sink in its decoding process, beside this process which owns chDB: exactly once, through a
kill -9 of the decoding process, and no decoding process left behind when its owner dies."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from kafka import KafkaProducer
from prometheus_client import REGISTRY

from tests.integration.reporting.test_sink import (
    ACTIVITY,
    MASTERY_HISTORY,
    all_committed,
    counts,
    item_attempted,
    mastery_updated,
    produce,
    producer,
    sink_settings,
    store,
    wait_until,
)
from trellis.common.settings import Settings
from trellis.reporting.sink import ReportingSink
from trellis.reporting.sink_process import SinkProcess
from trellis.reporting.store.chdb import ChdbStore

__all__ = ["producer", "sink_settings", "store"]  # fixtures

ROOT = Path(__file__).resolve().parents[3]


def _children(pid: int) -> list[int]:
    """Child processes of every thread of `pid` (a thread started them)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except FileNotFoundError:
            continue  # the thread ended
    return found


def _decoder(pid: int) -> int | None:
    """The decoding process among `pid`'s children (multiprocessing's resource tracker aside)."""
    for child in _children(pid):
        with contextlib.suppress(FileNotFoundError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
    return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _rows_metric(table: str) -> float:
    value = REGISTRY.get_sample_value("trellis_reporting_sink_rows_total", {"table": table})
    return value or 0.0


def test_events_are_stored_once_through_a_kill_of_the_decoding_process(
    sink_settings: Settings, store: ChdbStore, producer: KafkaProducer
) -> None:
    mastery_topic = sink_settings.kafka.topics.name("mastery")
    activity_topic = sink_settings.kafka.topics.name("activity")
    rows_before = _rows_metric(ACTIVITY)
    sink = SinkProcess(sink_settings, store)
    in_process = ReportingSink(sink_settings, store)  # for its topics
    sink.start()
    try:
        wait_until(sink.running.is_set, "the decoding process to subscribe")
        produce(producer, activity_topic, [item_attempted(n) for n in range(200)])
        wait_until(lambda: counts(store)[ACTIVITY] == 200, "the first rows")
        first = _decoder(os.getpid())
        assert first is not None
        produce(producer, mastery_topic, [mastery_updated(n) for n in range(400)])
        wait_until(lambda: sink.stats.consumed > 200, "the decoding process to read on")
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: not sink.healthy, "the owner to see the decoding process gone")
        produce(producer, activity_topic, [item_attempted(n) for n in range(200, 300)])
        wait_until(lambda: _decoder(os.getpid()) not in (None, first), "a new decoding process")
        wait_until(
            lambda: counts(store)[ACTIVITY] == 300 and counts(store)[MASTERY_HISTORY] == 400,
            "every row",
        )
        wait_until(all_committed(sink_settings, in_process), "offsets committed")
        assert sink.healthy
    finally:
        assert sink.stop(timeout=30), "the sink did not stop"
    assert counts(store)[ACTIVITY] == 300 and counts(store)[MASTERY_HISTORY] == 400
    # The decoding process's metrics are the owner's.
    assert _rows_metric(ACTIVITY) - rows_before >= 300
    assert _decoder(os.getpid()) is None


OWNER = """
import sys, time
from trellis.common.settings import Settings
from trellis.reporting.sink_process import SinkProcess
from trellis.reporting.store.chdb import ChdbStore

if __name__ == "__main__":
    settings = Settings.model_validate_json(sys.stdin.read())
    store = ChdbStore(__import__("pathlib").Path(sys.argv[1]), "trellis")
    store.migrate()
    sink = SinkProcess(settings, store)
    sink.start()
    while not sink.running.is_set():
        time.sleep(0.05)
    print("running", flush=True)
    time.sleep(600)
"""


def test_the_decoding_process_ends_when_its_owner_is_killed(
    sink_settings: Settings, tmp_path: Path
) -> None:
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(OWNER))
    owner = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "chdb")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert owner.stdin is not None and owner.stdout is not None
        owner.stdin.write(sink_settings.model_dump_json())
        owner.stdin.close()
        while owner.stdout.readline().strip() != "running":  # the decoding process logs too
            assert owner.poll() is None, "the owner ended"
        children = _children(owner.pid)
        assert _decoder(owner.pid) is not None
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in children if _alive(pid)], "processes left behind"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
