"""Mastery worker latency: from an attempt's ingest to its `MasteryUpdated`, at offered rates.

One `python -m trellis.mastery worker` process (as in `mastery.py`) on fresh topics; this process
offers attempts of `mastery.LEARNERS` learners to the activity topic open loop, at each of
`RATES` events/s in turn for `seconds` (quick 10 s, full 30 s), with a kafka-python producer
(what ingest uses), the attempts built before each phase (since 2026-12-02: the producer took
50 to 70 % of a core at 5,000/s, on the 2 cores the worker runs on). An attempt's ingest time is
its due time in the schedule, written as the record's timestamp, so a producer that falls behind
shows as latency, not as a lower rate. Its `MasteryUpdated` time is the timestamp the worker's
producer gave the output record. Latency = the second minus the first, per attempt; p50 and p99
per rate. The same from the broker's append time too (`from_append_*`: the benchmark's activity
topic is set to `LogAppendTime`, read back after each phase), which leaves the load generator's
own lateness out; the target is judged from the due time, as before. CPU, in % of one core:
the worker's user + system time over the phase (offer and drain), this process's (the
producer) while it offers. The next rate starts once every output of the phase was read (or
`DRAIN_S` passed: then the missing ones count as lost and the phase as failed).

Ingest itself is not in the loop: on this machine it stores at most about 3,500 events/s (see
bench/README.md "Load generator"), below the 5,000 to offer. Target: p99 < 250 ms at 5,000.

Run alone: `.venv/bin/python -m bench.benchmarks.mastery_latency [--full]` (127.0.0.1:9092).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psutil
from kafka import TopicPartition
from kafka.admin import ConfigResource

from bench.benchmarks.mastery import (
    PARTITIONS,
    REPO,
    WAIT_S,
    _settings,
    _stop,
    _worker_env,
    make_event,
)
from bench.framework import BenchContext, BenchResult, run_standalone
from trellis.common.codec import Encoded
from trellis.common.kafka import create_admin, create_consumer, create_producer, ensure_topics
from trellis.common.pb.events.v1 import envelope_pb2
from trellis.common.settings import Settings

RATES = (1_000, 2_000, 5_000)
DRAIN_S = 60.0
#: The sender sleeps until the next attempt is due once it is this far ahead of the schedule.
AHEAD_S = 0.001


def _cause_of_update(envelope: envelope_pb2.Envelope) -> str | None:
    if envelope.WhichOneof("payload") == "mastery_updated":
        return envelope.mastery_updated.cause_event_id
    return None


def _event_id(envelope: envelope_pb2.Envelope) -> str | None:
    return envelope.event_id


class RecordTimes:
    """Reads a topic's envelopes: the id `id_of` gives each (None: skipped) -> the record's
    timestamp (ms), the first one seen."""

    def __init__(
        self, settings: Settings, stream: str, id_of: Callable[[envelope_pb2.Envelope], str | None]
    ) -> None:
        topic = settings.kafka.topics.name(stream)
        self.consumer = create_consumer(settings.kafka, None)
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning()
        self._id_of = id_of
        self.at_ms: dict[str, int] = {}

    def read(self, timeout_ms: int = 200) -> None:
        for records in self.consumer.poll(timeout_ms=timeout_ms, max_records=10_000).values():
            for record in records:
                found = self._id_of(envelope_pb2.Envelope.FromString(record.value))
                if found is not None:
                    self.at_ms.setdefault(found, record.timestamp)

    def wait_for(self, causes: list[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not all(c in self.at_ms for c in causes):
            if time.monotonic() > deadline:
                return False
            self.read()
        return True


def _attempts(run: str, rate: int, seconds: float) -> dict[str, Encoded]:
    """A phase's attempts by event id, in the order due, built before its clock starts (since
    2026-12-02, 15:58Z: built inside it, they took 1 to 2 s of the phase's time, which lowered
    the offered rate shown and the worker's CPU share); `occurred_at` is the build time plus
    their offset in the schedule."""
    built_at = time.time()
    return {
        f"{run}-{i}": make_event(i, run, datetime.fromtimestamp(built_at + i / rate, UTC))
        for i in range(int(rate * seconds))
    }


def _offer(producer: Any, topic: str, attempts: dict[str, Encoded], rate: int) -> dict[str, int]:
    """Send `attempts` open loop at `rate`; returns event id -> due time (ms).

    The sender sleeps only once it is 1 ms ahead, so that the load generator takes less of the
    2 cores it shares with the worker (its record timestamps stay each attempt's own due time,
    so a late send counts as latency)."""
    due_ms: dict[str, int] = {}
    start = time.time()
    for i, (event_id, record) in enumerate(attempts.items()):
        due = start + i / rate
        ahead = due - time.time()
        if ahead > AHEAD_S:
            time.sleep(ahead)
        stamp = int(due * 1000)
        producer.send(
            topic, key=record.key, value=record.value, headers=record.headers, timestamp_ms=stamp
        )
        due_ms[event_id] = stamp
    producer.flush()
    return due_ms


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def run(ctx: BenchContext) -> list[BenchResult]:
    seconds = 10.0 if ctx.quick else 30.0
    prefix = f"bench-mastery-latency-{uuid.uuid4().hex[:8]}."
    settings = _settings(ctx.bootstrap_servers, prefix)
    ensure_topics(settings.kafka)
    activity = settings.kafka.topics.name("activity")
    # The broker stamps each attempt with its append time ("ingested"), besides its due time.
    create_admin(settings.kafka).alter_configs(
        [ConfigResource("TOPIC", activity, {"message.timestamp.type": "LogAppendTime"})]
    )
    producer = create_producer(settings.kafka)
    outputs = RecordTimes(settings, "mastery", _cause_of_update)
    appended = RecordTimes(settings, "activity", _event_id)
    with (ctx.work_dir / "worker-latency.log").open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "trellis.mastery", "worker"],
            env=_worker_env(settings, ctx.work_dir / "worker-latency-data"),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    phases: list[dict[str, Any]] = []
    try:
        # Warm-up: the worker has joined the group and answers before anything is timed.
        warm = _offer(producer, activity, _attempts("warm", 50, 1.0), 50)
        if not outputs.wait_for(list(warm), WAIT_S):
            raise TimeoutError("mastery worker did not answer the warm-up attempts")
        worker_ps, me = psutil.Process(worker.pid), psutil.Process()
        for rate in RATES:
            attempts = _attempts(f"r{rate}", rate, seconds)
            cpu_worker, cpu_me, started = _cpu(worker_ps), _cpu(me), time.monotonic()
            due_ms = _offer(producer, activity, attempts, rate)
            offered_s = time.monotonic() - started
            cpu_offering = _cpu(me) - cpu_me
            complete = outputs.wait_for(list(due_ms), DRAIN_S)
            wall = time.monotonic() - started
            latencies = [outputs.at_ms[e] - d for e, d in due_ms.items() if e in outputs.at_ms]
            appended.wait_for(list(due_ms), DRAIN_S)
            from_append = [
                outputs.at_ms[e] - appended.at_ms[e]
                for e in due_ms
                if e in outputs.at_ms and e in appended.at_ms
            ]
            phase = {
                "offered_per_s": rate,
                "achieved_offer_per_s": round(len(due_ms) / offered_s),
                "events": len(due_ms),
                "answered": len(latencies),
                "p50_ms": _percentile(latencies, 0.50),
                "p99_ms": _percentile(latencies, 0.99),
                "max_ms": max(latencies),
                "from_append_p50_ms": _percentile(from_append, 0.50),
                "from_append_p99_ms": _percentile(from_append, 0.99),
                "worker_cpu_pct": round(100 * (_cpu(worker_ps) - cpu_worker) / wall),
                # While offering only (reading the outputs back comes after).
                "producer_cpu_pct": round(100 * cpu_offering / offered_s),
                "complete": complete,
            }
            phases.append(phase)
            print(f"  {json.dumps(phase)}", flush=True)
    finally:
        producer.close()
        outputs.consumer.close()
        appended.consumer.close()
        _stop(worker)
    at_5000 = next(p for p in phases if p["offered_per_s"] == 5_000)
    return [
        BenchResult(
            name="mastery.latency_p99_ms_at_5000",
            unit="ms",
            value=float(at_5000["p99_ms"]),
            target="p99 < 250 ms at 5,000 events/s offered",
            passed=at_5000["complete"] and at_5000["p99_ms"] < 250,
            figures={"seconds_per_rate": seconds, "phases": phases},
        )
    ]


if __name__ == "__main__":
    run_standalone(run)
