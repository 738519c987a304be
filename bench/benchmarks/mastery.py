"""Mastery worker throughput next to a bare Faust agent, same events, same broker, same run.

Both read the same pre-filled activity topic (attempts of `LEARNERS` learners on `SKILLS` skills,
one skill each, keys `tenant/learner`, `PARTITIONS` partitions) from the beginning, each in its
own process and consumer group, one after the other (never side by side on this 2-core machine).

Subject: `python -m trellis.mastery worker` (its own process, as in production): decode, load the
learner's state from RocksDB, BKT update, store the state (changelog), publish `MasteryUpdated`
(and `SkillMastered`). Its rate is measured from the outside: the attempts it answered divided by
the span between the broker timestamps (producer create time) of the first and the last
`MasteryUpdated` it published, so its startup and table recovery are not counted. The first
output comes only once the worker's first micro-batch (up to `BATCH_MAX` events) is applied, so
that batch's work lies before the span: it is left out of the count too (as if it were full,
which can only understate the worker), else the quick size's ratio would be inflated by up to 20%.
Baseline: a bare Faust agent (the same `create_app` settings, concurrency 1, `stream.events()`,
`memory://` store) that only decodes each envelope with the event codec and counts; its rate is
the events divided by the span between its first and its last event, timed inside the process.

Both also report their CPU time per event (the worker's process sampled with psutil at the first
and the last poll that saw its outputs; the bare agent's process time from its first to its last
event), which the machine's load moves less than the rates.

Sizes: quick 20,000 events (40 per learner); full 100,000 events (200 per learner), best of two
rounds. Target: worker events/s >= 0.5 x the bare agent's (stretch: >= 20,000 events/s).

Run alone: `.venv/bin/python -m bench.benchmarks.mastery [--full]` (broker on 127.0.0.1:9092).
The bare agent runs as `python -m bench.benchmarks.mastery bare PREFIX N OUT`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from kafka import TopicPartition

from bench.framework import BenchContext, BenchResult, run_standalone
from bench.service_process import free_port
from trellis.common.codec import Encoded, decode_envelope, encode_envelope, learner_key
from trellis.common.faust_app import create_app
from trellis.common.kafka import create_consumer, create_producer, ensure_topics
from trellis.common.pb.events.v1 import envelope_pb2
from trellis.common.settings import Settings
from trellis.mastery.stream.agents import BATCH_MAX

TENANT = "bench-district"
LEARNERS = 500
SKILLS = 20
PARTITIONS = 6
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 240.0


def _settings(bootstrap: str, prefix: str) -> Settings:
    base = Settings()
    return Settings(
        kafka=base.kafka.model_copy(
            update={
                "bootstrap_servers": bootstrap,
                "topics": base.kafka.topics.model_copy(
                    update={"prefix": prefix, "partitions": PARTITIONS}
                ),
            }
        ),
        mastery=base.mastery.model_copy(
            update={
                "consumer_group": f"{prefix}mastery",
                "broker_session_timeout_s": 10.0,
                "broker_heartbeat_interval_s": 1.0,
            }
        ),
    )


def make_events(n: int, run: str) -> list[Encoded]:
    """Attempts in the stored form ingest writes (pseudonymous ids, both timestamps)."""
    start = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
    return [make_event(i, run, start + timedelta(seconds=i)) for i in range(n)]


def make_event(i: int, run: str, when: datetime) -> Encoded:
    """Attempt number `i` of run `run`: learner i mod LEARNERS, a skill that changes every
    LEARNERS events, 70 % correct; occurred and ingested at `when`."""
    learner = f"pseudo-{i % LEARNERS:04d}"
    event = envelope_pb2.Envelope(
        event_id=f"{run}-{i}",
        tenant_id=TENANT,
        learner_id=learner,
        school_id="sch1",
        class_id=f"c{i % LEARNERS // 25}",
        pseudonym_key_version=1,
    )
    event.occurred_at.FromDatetime(when)
    event.ingested_at.FromDatetime(when)
    event.source.system = "bench"
    attempt = event.item_attempted
    attempt.item_id = f"item-{i % 200}"
    attempt.skill_ids.append(f"skill-{(i // LEARNERS) % SKILLS}")
    attempt.correct = (i * 7919) % 10 < 7
    attempt.attempt_number = 1
    attempt.duration_seconds = 20.0
    encoded = encode_envelope(event)
    assert encoded.key == learner_key(TENANT, learner)
    return encoded


def fill(settings: Settings, records: list[Encoded]) -> None:
    producer = create_producer(settings.kafka)
    topic = settings.kafka.topics.name("activity")
    try:
        for r in records:
            producer.send(topic, key=r.key, value=r.value, headers=r.headers)
        producer.flush()
    finally:
        producer.close()


# --- the baseline: a bare Faust agent ------------------------------------------------------


def bare_main(prefix: str, n: int, out: Path, bootstrap: str) -> None:
    """Decode and count `n` events of the activity topic, then write the timing to `out`.
    Its consumer group is named after `out`, so that every run reads from the beginning."""
    import faust

    settings = _settings(bootstrap, prefix)
    work = out.parent / f"{out.stem}-data"
    app = create_app(f"{prefix}{out.stem}", settings, store="memory://", datadir=work)
    topic = app.topic(
        settings.kafka.topics.name("activity"),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    seen = {"count": 0, "first": 0.0, "first_cpu": 0.0}

    async def count(stream: Any) -> None:
        async for event in stream.events():
            headers = event.headers or {}
            items = headers.items() if hasattr(headers, "items") else headers
            decode_envelope(event.value, [(str(k), bytes(v)) for k, v in items])
            seen["count"] += 1
            if seen["count"] == 1:
                seen["first"], seen["first_cpu"] = time.perf_counter(), time.process_time()
            if seen["count"] == n:
                elapsed = time.perf_counter() - seen["first"]
                cpu = time.process_time() - seen["first_cpu"]
                out.write_text(json.dumps({"count": n, "seconds": elapsed, "cpu_seconds": cpu}))

    app.agent(topic, name="bench.bare_count", concurrency=1)(count)
    faust.Worker(
        app, loglevel="warning", quiet=True, override_logging=False
    ).execute_from_commandline()


def run_bare(ctx: BenchContext, prefix: str, n: int, round_no: int) -> dict[str, float]:
    """The bare agent's events/s and its CPU time per event (us), from its first event on."""
    out = ctx.work_dir / f"bare-{round_no}.json"
    with (ctx.work_dir / f"bare-{round_no}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.benchmarks.mastery", "bare", prefix, str(n), str(out)],
            env={**os.environ, "BENCH_BOOTSTRAP": ctx.bootstrap_servers},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        deadline = time.monotonic() + WAIT_S
        while not out.exists():
            if process.poll() is not None:
                raise RuntimeError(f"bare agent exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("bare agent did not count every event")
            time.sleep(0.2)
    finally:
        _stop(process)
    result = json.loads(out.read_text())
    return {
        "rate": float(n - 1) / float(result["seconds"]),
        "cpu_us": 1e6 * float(result["cpu_seconds"]) / (n - 1),
    }


# --- the subject: the mastery worker ---------------------------------------------------------


def _worker_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    kafka, mastery = settings.kafka, settings.mastery
    return {
        **os.environ,
        "TRELLIS_LOG_LEVEL": "WARNING",
        "TRELLIS_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "TRELLIS_KAFKA__TOPICS__PREFIX": kafka.topics.prefix,
        "TRELLIS_KAFKA__TOPICS__PARTITIONS": str(kafka.topics.partitions),
        "TRELLIS_MASTERY__CONSUMER_GROUP": mastery.consumer_group,
        "TRELLIS_MASTERY__BROKER_SESSION_TIMEOUT_S": str(mastery.broker_session_timeout_s),
        "TRELLIS_MASTERY__BROKER_HEARTBEAT_INTERVAL_S": str(mastery.broker_heartbeat_interval_s),
        "TRELLIS_MASTERY__DATA_DIR": str(data_dir),
        "TRELLIS_SERVICES__MASTERY__PORT": str(free_port()),
        "TRELLIS_SERVICES__MASTERY__METRICS_PORT": str(free_port()),
        "TRELLIS_SERVICES__MASTERY__GRACE_SECONDS": "2",
        "TRELLIS_PSEUDONYM__KEYS": json.dumps({TENANT: {"1": "bench-pseudonym-key"}}),
        "TRELLIS_AUTH__TOKENS": json.dumps(
            {"bench-token": {"tenant_id": TENANT, "role": "service"}}
        ),
    }


def run_worker(ctx: BenchContext, settings: Settings, n: int, round_no: int) -> dict[str, Any]:
    """Start the worker on its own group; the attempts answered per second of output span, and
    its CPU time per attempt answered (us) between the first and the last poll that saw outputs
    (its process sampled by psutil, so startup and shutdown are left out)."""
    topic = settings.kafka.topics.name("mastery")
    consumer = create_consumer(settings.kafka, None)
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_end()
    for tp in partitions:
        consumer.position(tp)  # resolve now: only this round's outputs count
    with (ctx.work_dir / f"worker-{round_no}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "trellis.mastery", "worker"],
            env=_worker_env(settings, ctx.work_dir / f"worker-data-{round_no}"),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    causes: set[str] = set()
    cpu_samples: list[tuple[float, int]] = []  # (worker CPU seconds, attempts answered)
    first_ms = last_ms = 0
    outputs = 0
    try:
        deadline = time.monotonic() + WAIT_S
        while len(causes) < n:
            if process.poll() is not None:
                raise RuntimeError(f"mastery worker exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"mastery worker answered {len(causes)} of {n} in {WAIT_S} s")
            for records in consumer.poll(timeout_ms=500, max_records=5_000).values():
                for record in records:
                    outputs += 1
                    envelope = envelope_pb2.Envelope.FromString(record.value)
                    if envelope.WhichOneof("payload") != "mastery_updated":
                        continue
                    causes.add(envelope.mastery_updated.cause_event_id)
                    first_ms = record.timestamp if not first_ms else min(first_ms, record.timestamp)
                    last_ms = max(last_ms, record.timestamp)
            if causes and (not cpu_samples or cpu_samples[-1][1] < len(causes)):
                times = psutil.Process(process.pid).cpu_times()
                cpu_samples.append((times.user + times.system, len(causes)))
    finally:
        consumer.close()
        _stop(process)
    span = (last_ms - first_ms) / 1000
    (cpu_first, answered_first), (cpu_last, answered_last) = cpu_samples[0], cpu_samples[-1]
    cpu_us = 1e6 * (cpu_last - cpu_first) / max(1, answered_last - answered_first)
    return {
        "rate": (n - min(BATCH_MAX, n - 1)) / span,
        "seconds": span,
        "outputs": outputs,
        "cpu_us": cpu_us,
    }


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def run(ctx: BenchContext) -> list[BenchResult]:
    n = 20_000 if ctx.quick else 100_000
    rounds = 1 if ctx.quick else 2
    worker_rates: list[float] = []
    bare_rates: list[float] = []
    worker_cpu: list[float] = []
    bare_cpu: list[float] = []
    outputs = 0
    for r in range(rounds):
        prefix = f"bench-mastery-{uuid.uuid4().hex[:8]}."
        settings = _settings(ctx.bootstrap_servers, prefix)
        ensure_topics(settings.kafka)
        records = make_events(n, f"r{r}")
        size = sum(len(rec.value) for rec in records) / n
        fill(settings, records)
        print(f"mastery bench round {r + 1}: {n} events on {PARTITIONS} partitions", flush=True)
        bare = run_bare(ctx, prefix, n, r)
        bare_rates.append(bare["rate"])
        bare_cpu.append(bare["cpu_us"])
        print(f"  bare Faust agent {bare['rate']:,.0f} events/s, {bare['cpu_us']:.0f} us CPU/event")
        measured = run_worker(ctx, settings, n, r)
        worker_rates.append(measured["rate"])
        worker_cpu.append(measured["cpu_us"])
        outputs = measured["outputs"]
        print(
            f"  mastery worker {measured['rate']:,.0f} events/s,"
            f" {measured['cpu_us']:.0f} us CPU/event",
            flush=True,
        )
    value, baseline = max(worker_rates), max(bare_rates)
    return [
        BenchResult(
            name="mastery.events_per_second",
            unit="events/s",
            value=round(value, 1),
            baseline=round(baseline, 1),
            target="ratio >= 0.5 (stretch >= 20,000 events/s)",
            passed=value / baseline >= 0.5,
            figures={
                "events_per_round": n,
                "rounds": rounds,
                "learners": LEARNERS,
                "skills": SKILLS,
                "partitions": PARTITIONS,
                "message_bytes_avg": round(size, 1),
                "outputs_last_round": outputs,
                "worker_rounds": [round(x) for x in worker_rates],
                "bare_rounds": [round(x) for x in bare_rates],
                # CPU time per event (us), which the machine's load moves less than the rates.
                "worker_cpu_us_rounds": [round(x) for x in worker_cpu],
                "bare_cpu_us_rounds": [round(x) for x in bare_cpu],
                "stretch_20k": value >= 20_000,
            },
        )
    ]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "bare":
        bare_main(
            sys.argv[2],
            int(sys.argv[3]),
            Path(sys.argv[4]),
            os.environ.get("BENCH_BOOTSTRAP", "127.0.0.1:9092"),
        )
    else:
        run_standalone(run)
