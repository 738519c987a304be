"""Ingest throughput next to a bare kafka-python producer, on the same broker in the same run.

Subject: a real ingest process (`python -m trellis.ingest serve`, its own process as in
production) with auth (bearer token), validation, catalog/roster checks, pseudonymization and
dedup on, fed over gRPC by `concurrency` concurrent `RecordEvents` calls of `batch` events each.
Baseline: a kafka-python producer built by the same `create_producer` (same settings: acks=all,
idempotence, gzip, linger) sending the same serialized events (the stored form ingest writes) in
the same batches from `concurrency` threads, each waiting for its batch's acks like ingest does.

Sizes: quick 20,000 events per side; full 200,000 events per side, best of two rounds. Batch 500,
concurrency 4. Target: ingest events/s >= 0.5 x the bare producer's.

Run alone: `.venv/bin/python -m bench.benchmarks.ingest [--full]` (broker on 127.0.0.1:9092).
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from pydantic import SecretStr

from bench.framework import BenchContext, BenchResult, run_standalone
from bench.service_process import KEY, TENANT, TOKEN, free_port, start_service, wait_serving
from trellis.common.codec import Encoded, encode_envelope
from trellis.common.kafka import create_producer, ensure_topics
from trellis.common.pb.events.v1 import catalog_pb2, envelope_pb2, roster_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import KafkaSettings, Settings

BATCH = 500
CONCURRENCY = 4
LEARNERS = 2_000
ITEMS = 200
REPO = Path(__file__).resolve().parents[2]


def make_events(n: int, run: str, now: datetime) -> list[envelope_pb2.Envelope]:
    events = []
    for i in range(n):
        event = envelope_pb2.Envelope(
            event_id=f"{run}-{i}",
            learner_id=f"sis-{i % LEARNERS}",
            school_id="sch1",
            class_id=f"c{i % LEARNERS // 25}",
        )
        event.occurred_at.FromDatetime(now - timedelta(seconds=n - i))
        event.source.system = "bench"
        attempt = event.item_attempted
        attempt.item_id = f"item-{i % ITEMS}"
        attempt.skill_ids.append(f"skill-{i % ITEMS // 10}")
        attempt.correct = i % 3 != 0
        attempt.attempt_number = 1 + i % 4
        attempt.duration_seconds = 20.0 + i % 40
        events.append(event)
    return events


def stored_form(events: Sequence[envelope_pb2.Envelope], now: datetime) -> list[Encoded]:
    """What ingest writes for these events: the baseline sends exactly these bytes."""
    pseudonymizer = Pseudonymizer({TENANT: {1: SecretStr(KEY)}})
    encoded = []
    for event in events:
        stored = envelope_pb2.Envelope()
        stored.CopyFrom(event)
        stored.tenant_id = TENANT
        stored.pseudonym_key_version = 1
        stored.learner_id = pseudonymizer.pseudonymize(TENANT, event.learner_id)
        stored.ingested_at.FromDatetime(now)
        encoded.append(encode_envelope(stored))
    return encoded


def bare_producer(kafka: KafkaSettings, records: Sequence[Encoded]) -> float:
    """Events/s of `CONCURRENCY` threads sending batches and waiting for each batch's acks."""
    producer = create_producer(kafka)
    topic = kafka.topics.name("activity")
    batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
    lock = threading.Lock()
    failed = 0

    def worker() -> None:
        nonlocal failed
        while True:
            with lock:
                if not batches:
                    return
                batch = batches.pop()
            futures = [
                producer.send(topic, key=r.key, value=r.value, headers=r.headers) for r in batch
            ]
            producer.flush()
            bad = sum(1 for f in futures if f.failed())
            with lock:
                failed += bad

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    producer.close()
    if failed:
        raise RuntimeError(f"bare producer: {failed} records not stored")
    return len(records) / elapsed


async def through_ingest(target: str, events: Sequence[envelope_pb2.Envelope]) -> float:
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    requests = [
        ingest_pb2.RecordEventsRequest(tenant_id=TENANT, events=events[i : i + BATCH])
        for i in range(0, len(events), BATCH)
    ]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        accepted = 0

        async def worker() -> None:
            nonlocal accepted
            while requests:
                request = requests.pop()
                reply = await stub.RecordEvents(request, metadata=metadata, timeout=60)
                statuses = [r.status for r in reply.results]
                if any(r.warnings or r.violations for r in reply.results):
                    raise RuntimeError(f"unexpected remarks: {reply.results[0]}")
                accepted += statuses.count(ingest_pb2.ITEM_STATUS_ACCEPTED)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    if accepted != len(events):
        raise RuntimeError(f"ingest accepted {accepted} of {len(events)}")
    return len(events) / elapsed


async def seed(target: str) -> None:
    """The catalog items and skills and the roster classes the events name, so that the
    reference checks pass without remarks."""
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    catalog = [
        catalog_pb2.CatalogRecord(skill=catalog_pb2.Skill(skill_id=f"skill-{s}"))
        for s in range(ITEMS // 10)
    ] + [
        catalog_pb2.CatalogRecord(item=catalog_pb2.Item(item_id=f"item-{i}")) for i in range(ITEMS)
    ]
    classes = [
        roster_pb2.RosterRecord(
            school_class=roster_pb2.SchoolClass(sourced_id=f"c{c}", school_id="sch1")
        )
        for c in range(LEARNERS // 25)
    ]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        await stub.UpsertCatalog(
            ingest_pb2.UpsertCatalogRequest(tenant_id=TENANT, records=catalog), metadata=metadata
        )
        await stub.UpsertRoster(
            ingest_pb2.UpsertRosterRequest(tenant_id=TENANT, records=classes), metadata=metadata
        )


def run(ctx: BenchContext) -> list[BenchResult]:
    n = 20_000 if ctx.quick else 200_000
    rounds = 1 if ctx.quick else 2
    prefix = f"bench-ingest-{uuid.uuid4().hex[:8]}."
    base = Settings()
    kafka = base.kafka.model_copy(
        update={
            "bootstrap_servers": ctx.bootstrap_servers,
            "topics": base.kafka.topics.model_copy(update={"prefix": prefix}),
        }
    )
    baseline_kafka = kafka.model_copy(
        update={"topics": kafka.topics.model_copy(update={"prefix": f"{prefix}bare."})}
    )
    ensure_topics(kafka)
    ensure_topics(baseline_kafka)
    port = free_port()
    target = f"127.0.0.1:{port}"
    print(f"ingest bench: {n} events x {rounds} round(s), starting ingest on {target}", flush=True)
    process = start_service(
        "ingest",
        ctx.work_dir / "ingest.log",
        bootstrap=ctx.bootstrap_servers,
        prefix=prefix,
        port=port,
        env={
            "TRELLIS_INGEST__MAX_BATCH_SIZE": str(BATCH),
            "TRELLIS_INGEST__UNKNOWN_REFERENCES": "reject",
        },
    )
    ingest_rates: list[float] = []
    bare_rates: list[float] = []
    try:
        wait_serving(target, process)
        asyncio.run(seed(target))
        time.sleep(1.0)  # let the replicas follow the seeded records
        for r in range(rounds):
            now = datetime.now(UTC)
            events = make_events(n, f"r{r}-{uuid.uuid4().hex[:6]}", now)
            records = stored_form(events, now)
            size = sum(len(rec.value) for rec in records) / len(records)
            ingest_rates.append(asyncio.run(through_ingest(target, events)))
            print(f"  round {r + 1}: ingest {ingest_rates[-1]:,.0f} events/s", flush=True)
            bare_rates.append(bare_producer(baseline_kafka, records))
            print(f"  round {r + 1}: bare producer {bare_rates[-1]:,.0f} events/s", flush=True)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    value, baseline = max(ingest_rates), max(bare_rates)
    return [
        BenchResult(
            name="ingest.events_per_second",
            unit="events/s",
            value=round(value, 1),
            baseline=round(baseline, 1),
            target="ratio >= 0.5",
            passed=value / baseline >= 0.5,
            figures={
                "events_per_side_per_round": n,
                "rounds": rounds,
                "batch_size": BATCH,
                "concurrency": CONCURRENCY,
                "message_bytes_avg": round(size, 1),
                "compression": kafka.compression_type,
                "acks": "all",
                "idempotent": True,
                "checks": "auth, validation, catalog+roster references (reject), dedup",
                "ingest_rounds": [round(x) for x in ingest_rates],
                "bare_rounds": [round(x) for x in bare_rates],
            },
        )
    ]


if __name__ == "__main__":
    run_standalone(run)
