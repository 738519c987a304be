"""Reporting sink throughput: rows/s from Kafka into embedded chDB through `ReportingSink`.

Subject: simulated attempts (activity topic) and one `MasteryUpdated` per attempt (mastery topic)
are produced to the benchmark's own topics first; then a `ReportingSink` (product settings:
batches of `reporting.batch_max_rows` records or `batch_max_seconds`) over a `ChdbStore` consumes
them, decodes, maps to rows and inserts with deduplication tokens, committing after each insert.
The clock runs from the first record consumed (the consumer group's join is reported apart) until
every row is in the store: each attempt makes three rows (activity, mastery_history,
mastery_latest).

Baseline, same run, same chDB engine: the same rows, already built in memory, inserted with a bare
clickhouse-connect `client.insert` (column-oriented, `async_insert=0`, no tokens) into tables of
the same schema in another database, in blocks of the same size.

Target (DESIGN.md §6): sink >= 100,000 rows/s into chDB.
Sizes: quick 20,000 attempts (60,000 rows); full 200,000 attempts (600,000 rows).
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime

from bench.framework import BenchContext, BenchResult
from trellis.common.codec import encode_envelope
from trellis.common.kafka import create_producer, ensure_topics
from trellis.common.pb.events.v1 import envelope_pb2, mastery_pb2
from trellis.common.settings import Settings
from trellis.reporting.rows import Position, Row, rows_for
from trellis.reporting.sink import ReportingSink
from trellis.reporting.store.chdb import ChdbStore
from trellis.simulator.load import make_events

TENANT = "bench-district"
TARGET_ROWS_PER_S = 100_000
TIMEOUT_S = 300.0


def _settings(ctx: BenchContext, prefix: str) -> Settings:
    base = Settings()
    return Settings(
        kafka=base.kafka.model_copy(
            update={
                "bootstrap_servers": ctx.bootstrap_servers,
                "topics": base.kafka.topics.model_copy(
                    update={"prefix": f"{prefix}.", "partitions": 6}
                ),
                "session_timeout_ms": 6_000,
                "heartbeat_interval_ms": 1_000,
            }
        ),
        reporting=base.reporting.model_copy(update={"consumer_group": f"{prefix}-reporting"}),
    )


def _events(attempts: int) -> list[tuple[str, envelope_pb2.Envelope]]:
    """(stream, envelope) pairs: each simulated attempt, then the mastery update it caused."""
    pairs: list[tuple[str, envelope_pb2.Envelope]] = []
    now = datetime.now(UTC)
    p = 0.3
    made = 0
    for event in make_events(attempts * 3 // 2, learners=2000, seed=5, run_id="bench"):
        if made >= attempts or not event.HasField("item_attempted"):
            continue
        event.tenant_id = TENANT
        event.ingested_at.FromDatetime(now)
        pairs.append(("activity", event))
        update = envelope_pb2.Envelope(
            event_id=f"{event.event_id}-m",
            tenant_id=TENANT,
            school_id=event.school_id,
            class_id=event.class_id,
            learner_id=event.learner_id,
            occurred_at=event.occurred_at,
            ingested_at=event.ingested_at,
        )
        p_after = min(0.99, p + 0.05) if event.item_attempted.correct else max(0.01, p - 0.05)
        update.mastery_updated.CopyFrom(
            mastery_pb2.MasteryUpdated(
                skill_id=event.item_attempted.skill_ids[0],
                p_before=p,
                p_after=p_after,
                level=mastery_pb2.MASTERY_LEVEL_PRACTICING,
                cause_event_id=event.event_id,
                model_version="bench",
                attempts=event.item_attempted.attempt_number,
            )
        )
        pairs.append(("mastery", update))
        made += 1
    if made < attempts:
        raise RuntimeError(f"the simulator made {made} attempts, not {attempts}")
    return pairs


def _produce(settings: Settings, pairs: list[tuple[str, envelope_pb2.Envelope]]) -> float:
    producer = create_producer(settings.kafka)
    started = time.perf_counter()
    try:
        for stream, envelope in pairs:
            encoded = encode_envelope(envelope)
            producer.send(
                settings.kafka.topics.name(stream),
                key=encoded.key,
                value=encoded.value,
                headers=encoded.headers,
            )
        producer.flush()
    finally:
        producer.close()
    return time.perf_counter() - started


def _measure_sink(settings: Settings, store: ChdbStore, expected_rows: int) -> dict[str, float]:
    sink = ReportingSink(settings, store)
    started = time.perf_counter()
    sink.start()
    try:
        deadline = started + TIMEOUT_S
        while sink.stats.consumed == 0:
            if time.perf_counter() > deadline:
                raise TimeoutError("the sink consumed nothing")
            time.sleep(0.005)
        first = time.perf_counter()
        while sum(sink.stats.inserted.values()) < expected_rows:
            if time.perf_counter() > deadline:
                raise TimeoutError(
                    f"the sink inserted {sum(sink.stats.inserted.values())} of {expected_rows} rows"
                )
            time.sleep(0.005)
        done = time.perf_counter()
    finally:
        sink.stop(timeout=60)
    return {
        "join_s": first - started,
        "seconds": done - first,
        "rows": float(sum(sink.stats.inserted.values())),
        "flushes": float(sink.stats.flushes),
    }


def _measure_baseline(store: ChdbStore, rows: dict[str, list[Row]], block: int) -> float:
    client = store.client
    database = f"{store.database}_baseline"
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    for table in rows:
        client.command(f"CREATE TABLE {database}.{table} AS {store.database}.{table}")
    blocks = []
    for table, table_rows in rows.items():
        for start in range(0, len(table_rows), block):
            chunk = table_rows[start : start + block]
            columns = list(chunk[0])
            blocks.append((table, columns, [[r[c] for r in chunk] for c in columns]))
    started = time.perf_counter()
    for table, columns, data in blocks:
        client.insert(
            table,
            data,
            column_names=columns,
            column_oriented=True,
            database=database,
            settings={"async_insert": 0},
        )
    return time.perf_counter() - started


def run(ctx: BenchContext) -> list[BenchResult]:
    attempts = 20_000 if ctx.quick else 200_000
    prefix = f"bench-sink-{uuid.uuid4().hex[:8]}"
    settings = _settings(ctx, prefix)
    ensure_topics(settings.kafka)
    pairs = _events(attempts)
    produce_s = _produce(settings, pairs)

    # The rows the sink will make, built the same way (positions do not change the row sizes).
    rows: dict[str, list[Row]] = defaultdict(list)
    for offset, (stream, envelope) in enumerate(pairs):
        for table, row in rows_for(stream, envelope, Position(f"{prefix}.{stream}", 0, offset)):
            rows[table].append(row)
    expected = sum(len(r) for r in rows.values())

    store = ChdbStore(ctx.work_dir / "chdb", database="bench")
    try:
        store.migrate()
        sink = _measure_sink(settings, store, expected)
        baseline_s = _measure_baseline(store, rows, settings.reporting.batch_max_rows)
    finally:
        store.close()

    value = sink["rows"] / sink["seconds"]
    baseline = expected / baseline_s
    return [
        BenchResult(
            name="reporting.sink_rows_per_second",
            unit="rows/s",
            value=round(value, 1),
            baseline=round(baseline, 1),
            target=f">= {TARGET_ROWS_PER_S:,} rows/s into chDB",
            passed=value >= TARGET_ROWS_PER_S,
            figures={
                "size": "quick" if ctx.quick else "full",
                "attempts": attempts,
                "rows": int(sink["rows"]),
                "rows_per_table": {t: len(r) for t, r in rows.items()},
                "sink_seconds": round(sink["seconds"], 3),
                "sink_group_join_seconds": round(sink["join_s"], 3),
                "sink_flushes": int(sink["flushes"]),
                "batch_max_rows": settings.reporting.batch_max_rows,
                "baseline_seconds": round(baseline_s, 3),
                "baseline": "bare clickhouse-connect insert, same rows, same block size, same chDB",
                "produce_seconds": round(produce_s, 3),
            },
        )
    ]
