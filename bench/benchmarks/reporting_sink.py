"""Reporting sink throughput: Kafka into embedded chDB through the sink as served, three figures.

Subject: simulated attempts (activity topic) and one `MasteryUpdated` per attempt (mastery topic)
are produced to the benchmark's own topics first; then the sink as the service runs it
(`SinkProcess`, product settings: batches of `reporting.batch_max_rows` records or
`batch_max_seconds`): its decoding process consumes and batches the records, and this process,
which owns the `ChdbStore`, projects each batch (decodes, maps to rows, serializes, inserts with
deduplication tokens); the decoding process commits after each confirmed projection. The clock
runs from the first record consumed (the consumer group's join and the decoding process's start
are reported apart) until every row is in the store, as the decoding process reports them (a
poll's records as soon as it returns them, as the bare loop's clock starts at its first poll with
records; then each projection): each attempt makes three rows (activity, mastery_history,
mastery_latest).

Results (issue 8, acceptance (1)):
- `reporting.sink_events_per_second`: records/s end to end (consume, decode, rows, insert with
  tokens, commit), next to a bare loop in the same run that consumes the same records with the
  same client (kafka-python, its own group, same `max_poll_records`) and decodes each envelope,
  nothing more. Target: ratio >= 0.5.
- `reporting.insert_stage_rows_per_second`: the sink's insert stage alone (`Projector.insert`:
  positions, erasure filter, `_new_rows`, deduplication tokens, `store.insert`: serialization to
  Native bytes and their insert, one after the other in one process) over the same
  rows, already built, in the sink's batches (`batch_max_rows` records each), into a freshly
  migrated database (materialized views included), next to a bare clickhouse-connect
  `client.insert` (column-oriented, `async_insert=0`, no tokens) of the same blocks into another
  freshly migrated database of the same chDB engine. Target: ratio >= 0.5 and >= 100,000 rows/s.
- `reporting.sink_rows_per_second`: rows/s end to end (kept for comparison with earlier runs),
  against the bare insert. Target (DESIGN.md §6): >= 100,000 rows/s into chDB.
Sizes: quick 20,000 attempts (60,000 rows); full 200,000 attempts (600,000 rows).
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from bench.framework import BenchContext, BenchResult, run_standalone
from trellis.common.codec import decode_envelope, encode_envelope
from trellis.common.kafka import create_consumer, create_producer, ensure_topics
from trellis.common.pb.events.v1 import envelope_pb2, mastery_pb2
from trellis.common.settings import Settings
from trellis.reporting.projection import Projector, stream_topics
from trellis.reporting.rows import Position, Row, rows_for
from trellis.reporting.sink_process import SinkProcess
from trellis.reporting.store.chdb import ChdbStore
from trellis.simulator.load import make_events

TENANT = "bench-district"
TARGET_ROWS_PER_S = 100_000
TARGET_RATIO = 0.5
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
    sink = SinkProcess(settings, store)
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
        "records": float(sink.stats.consumed),
        "flushes": float(sink.stats.flushes),
    }


def _measure_bare_consume(settings: Settings, expected_records: int) -> dict[str, float]:
    """The same records through kafka-python, decoded, in a group of its own: records/s."""
    consumer = create_consumer(
        settings.kafka,
        f"{settings.reporting.consumer_group}-bare",
        max_poll_records=max(1, settings.reporting.batch_max_rows),
    )
    try:
        consumer.subscribe([settings.kafka.topics.name(s) for s in ("activity", "mastery")])
        started = time.perf_counter()
        deadline = started + TIMEOUT_S
        first: float | None = None
        count = 0
        while count < expected_records:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the bare loop consumed {count} of {expected_records}")
            polled = consumer.poll(timeout_ms=500, max_records=settings.reporting.batch_max_rows)
            for records in polled.values():
                if first is None:
                    first = time.perf_counter()
                for record in records:
                    decode_envelope(record.value, record.headers)
                    count += 1
        done = time.perf_counter()
    finally:
        consumer.close(autocommit=False)
    assert first is not None
    return {"join_s": first - started, "seconds": done - first, "records": float(count)}


def _batches(
    prefix: str, pairs: list[tuple[str, envelope_pb2.Envelope]], batch_records: int
) -> list[dict[str, list[Row]]]:
    """The rows the sink makes, in batches of `batch_records` records (offsets per topic)."""
    offsets: dict[str, int] = defaultdict(int)
    batches: list[dict[str, list[Row]]] = []
    for start in range(0, len(pairs), batch_records):
        rows: dict[str, list[Row]] = defaultdict(list)
        for stream, envelope in pairs[start : start + batch_records]:
            topic = f"{prefix}.{stream}"
            position = Position(topic, 0, offsets[topic])
            offsets[topic] += 1
            for table, row in rows_for(stream, envelope, position):
                rows[table].append(row)
        batches.append(rows)
    return batches


def _fresh_store(path: Path, database: str) -> ChdbStore:
    store = ChdbStore(path, database=database)
    store.migrate()
    return store


def _measure_insert_stage(
    settings: Settings, path: Path, batches: list[dict[str, list[Row]]]
) -> float:
    """The sink's own insert stage over prepared batches, into a fresh database."""
    store = _fresh_store(path, "bench_stage")
    try:
        projector = Projector(store, stream_topics(settings.kafka))
        started = time.perf_counter()
        projector.reload()
        for rows in batches:
            projector.insert(rows)
        return time.perf_counter() - started
    finally:
        store.close()


def _measure_baseline(path: Path, batches: list[dict[str, list[Row]]]) -> float:
    """Bare clickhouse-connect inserts of the same blocks into a fresh database, same engine."""
    store = _fresh_store(path, "bench_baseline")
    try:
        client = store.client
        blocks = []
        for rows in batches:
            for table, table_rows in rows.items():
                columns = list(table_rows[0]._fields)
                blocks.append((table, columns, [list(c) for c in zip(*table_rows, strict=True)]))
        started = time.perf_counter()
        for table, columns, data in blocks:
            client.insert(
                table,
                data,
                column_names=columns,
                column_oriented=True,
                database=store.database,
                settings={"async_insert": 0},
            )
        return time.perf_counter() - started
    finally:
        store.close()


def run(ctx: BenchContext) -> list[BenchResult]:
    attempts = 20_000 if ctx.quick else 200_000
    prefix = f"bench-sink-{uuid.uuid4().hex[:8]}"
    settings = _settings(ctx, prefix)
    ensure_topics(settings.kafka)
    pairs = _events(attempts)
    produce_s = _produce(settings, pairs)
    block = settings.reporting.batch_max_rows
    batches = _batches(prefix, pairs, block)
    rows_per_table: dict[str, int] = defaultdict(int)
    for rows in batches:
        for table, table_rows in rows.items():
            rows_per_table[table] += len(table_rows)
    expected = sum(rows_per_table.values())
    path = ctx.work_dir / "chdb"

    store = _fresh_store(path, "bench")
    try:
        sink = _measure_sink(settings, store, expected)
    finally:
        store.close()
    bare = _measure_bare_consume(settings, len(pairs))
    stage_s = _measure_insert_stage(settings, path, batches)
    baseline_s = _measure_baseline(path, batches)

    common = {
        "size": "quick" if ctx.quick else "full",
        "attempts": attempts,
        "records": len(pairs),
        "rows": expected,
        "rows_per_table": dict(rows_per_table),
        "batch_max_rows": block,
        "produce_seconds": round(produce_s, 3),
    }
    events = sink["records"] / sink["seconds"]
    bare_events = bare["records"] / bare["seconds"]
    stage = expected / stage_s
    baseline = expected / baseline_s
    rows_value = sink["rows"] / sink["seconds"]
    sink_figures = {
        "sink_seconds": round(sink["seconds"], 3),
        "sink_group_join_seconds": round(sink["join_s"], 3),
        "sink_flushes": int(sink["flushes"]),
    }
    return [
        BenchResult(
            name="reporting.sink_events_per_second",
            unit="events/s",
            value=round(events, 1),
            baseline=round(bare_events, 1),
            target=f"ratio >= {TARGET_RATIO}",
            passed=events >= TARGET_RATIO * bare_events,
            figures={
                **common,
                **sink_figures,
                "bare_seconds": round(bare["seconds"], 3),
                "bare_group_join_seconds": round(bare["join_s"], 3),
                "baseline": "bare kafka-python consumer + decode_envelope, same records, same run",
            },
        ),
        BenchResult(
            name="reporting.insert_stage_rows_per_second",
            unit="rows/s",
            value=round(stage, 1),
            baseline=round(baseline, 1),
            target=f"ratio >= {TARGET_RATIO} and >= {TARGET_ROWS_PER_S:,} rows/s",
            passed=stage >= TARGET_RATIO * baseline and stage >= TARGET_ROWS_PER_S,
            figures={
                **common,
                "stage_seconds": round(stage_s, 3),
                "baseline_seconds": round(baseline_s, 3),
                "baseline": "bare clickhouse-connect insert, same blocks, fresh migrated database, "
                "same chDB",
            },
        ),
        BenchResult(
            name="reporting.sink_rows_per_second",
            unit="rows/s",
            value=round(rows_value, 1),
            baseline=round(baseline, 1),
            target=f">= {TARGET_ROWS_PER_S:,} rows/s into chDB",
            passed=rows_value >= TARGET_ROWS_PER_S,
            figures={**common, **sink_figures, "baseline_seconds": round(baseline_s, 3)},
        ),
    ]


if __name__ == "__main__":
    run_standalone(run)
