"""Reporting query latency: class heatmap and needs-support p50/p95 over generated activity.

Subject: `ChdbStore.class_heatmap` and `ChdbStore.needs_support` (the SQL the reporting service
runs for `GetClassHeatmap` and `GetNeedsSupport`, class target, default thresholds, a 7-day
window, pages of 500) against embedded chDB, timed from the call to the decoded rows.

Data, generated inside chDB with `INSERT ... SELECT FROM numbers()` (no Python rows): one tenant,
20 schools, 200 classes (10 per school), 5,000 learners (25 per class), 50 skills, 4 months
(June to September 2025); N `activity` rows (attempts, resources, goals) spread uniformly over
learners and time, which feed `engagement_daily` through the materialized view; 250,000
`mastery_latest` cells (every learner x skill), 50,000 `mastery_events` (struggling), roster of
5,000 learners and enrollments. The store is cached in the work dir keyed by N and a data
version: a rerun on the same work dir reuses it (the `__main__` run keeps it in
`.local/bench/reporting_queries`).

District-sized roster: `--enrollments E` (E > 5,000; `__main__` only) enrols E learners in classes
of 25 (E / 25 classes, 10 a school), the 200 classes above among them (the extra learners have no
activity or mastery), with hashed enrollment ids (MD5 hex, GUID-like, as SIS feeds give them: a
class's enrollments are scattered over the table's id order). Cached apart, keyed by E too.

Baseline: none (an absolute target). Target (issue 8): p95 < 50 ms for each query.
Sizes: quick 1,000,000 activity rows, 40 runs per query; full 10,000,000 rows, 100 runs.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.framework import BenchContext, BenchResult, run_standalone
from trellis.reporting.store.base import Target
from trellis.reporting.store.chdb import ChdbStore

TENANT = "bench-district"
SCHOOLS, CLASSES, LEARNERS, SKILLS = 20, 200, 5_000, 50
START = "2025-06-01 00:00:00"
SECONDS = 122 * 86_400  # June to September
AS_OF = datetime(2025, 9, 30, 23, 59, tzinfo=UTC)
TARGET_P95_MS = 50.0


def _padded(prefix: str, number: str, width: int) -> str:
    """SQL of `prefix` and `number` zero-padded to `width` digits, or wider (leftPad would cut
    a longer number: a district-sized roster's ids would collide)."""
    digits = f"toString({number})"
    padded = f"leftPad({digits}, {width}, '0')"
    return f"concat('{prefix}', if(length({digits}) < {width}, {padded}, {digits}))"


# Learner l sits in class l // 25, class c in school c // 10.
_LEARNER = _padded("L", "{l}", 5)
_CLASS = _padded("C", "intDiv({l}, 25)", 3)
_SCHOOL = _padded("S", "intDiv({l}, 250)", 2)
_SKILL = _padded("K", "{k}", 2)


def _ids(l: str) -> str:  # noqa: E741
    return f"{_SCHOOL.format(l=l)}, {_CLASS.format(l=l)}, {_LEARNER.format(l=l)}"


def _generate(store: ChdbStore, rows: int, enrollments: int) -> None:
    db = store.database
    c = store.client
    l = f"(cityHash64(number, 1) % {LEARNERS})"  # noqa: E741
    k = f"(cityHash64(number, 2) % {SKILLS})"
    t = (
        f"toDateTime64('{START}', 3, 'UTC')"
        f" + toIntervalMillisecond(cityHash64(number, 3) % {SECONDS * 1000})"
    )
    kind = (
        "multiIf(number % 10 < 8, 'item_attempted', number % 10 < 9, 'resource_engaged',"
        " 'goal_set')"
    )
    c.command(
        f"""
        INSERT INTO {db}.activity (event_id, tenant_id, school_id, class_id, learner_id,
            occurred_at, ingested_at, kind, source_system, actor, activity_id, skill_ids,
            correct, score, attempt_number, hints_used, duration_seconds, completion, error_tag,
            assignment_id, self_chosen, source_topic, source_partition, source_offset)
        SELECT concat('e', toString(number)), '{TENANT}', {_ids(l)}, {t}, {t}, {kind}, 'bench',
            'learner', concat('a', toString(number % 5000)), [{_SKILL.format(k=k)}],
            if(number % 10 < 8, cityHash64(number, 4) % 3 > 0, NULL),
            if(number % 10 < 8, toFloat64(cityHash64(number, 4) % 3 > 0), NULL),
            toUInt32(1 + number % 4), toUInt32(number % 2), toFloat64(10 + number % 120), NULL,
            if(cityHash64(number, 4) % 3 = 0, 'sign_error', ''), '', false,
            'bench.activity', toUInt32(number % 6), number
        FROM numbers({rows})
        """,
        settings={"async_insert": 0, "max_insert_threads": 2},
    )
    cell_l, cell_k = f"intDiv(number, {SKILLS})", f"(number % {SKILLS})"
    c.command(
        f"""
        INSERT INTO {db}.mastery_latest
        SELECT '{TENANT}', {_ids(cell_l)}, {_SKILL.format(k=cell_k)},
            (cityHash64(number, 5) % 1000) / 1000.0 AS p,
            toUInt8(multiIf(p >= 0.95, 4, p >= 0.6, 3, p >= 0.3, 2, 1)),
            toUInt32(1 + cityHash64(number, 6) % 20), 'bench', concat('m', toString(number)),
            toDateTime64('{START}', 3, 'UTC') + toIntervalSecond(cityHash64(number, 7) % {SECONDS}),
            'bench.mastery', toUInt32(number % 6), number
        FROM numbers({LEARNERS * SKILLS})
        """,
        settings={"async_insert": 0},
    )
    ev_l = f"(cityHash64(number, 8) % {LEARNERS})"
    c.command(
        f"""
        INSERT INTO {db}.mastery_events
        SELECT concat('s', toString(number)), '{TENANT}', {_ids(ev_l)}, 'struggling_detected',
            {_SKILL.format(k=f"(cityHash64(number, 9) % {SKILLS})")}, 'repeated_errors',
            if(number % 2 = 0, 'sign_error', ''), toUInt32(3 + number % 5), 0.2,
            toDateTime64('{START}', 3, 'UTC')
                + toIntervalSecond(cityHash64(number, 10) % {SECONDS}),
            'bench.mastery', toUInt32(number % 6), 1000000000 + number
        FROM numbers(50000)
        """,
        settings={"async_insert": 0},
    )
    n = "number"
    c.command(
        f"""
        INSERT INTO {db}.roster_learners
        SELECT '{TENANT}', {_LEARNER.format(l=n)}, {_SCHOOL.format(l=n)},
            toString(3 + intDiv(number, 250) % 6), if(number % 7 = 0, ['ell'], []), 0,
            'bench.roster', 0, number
        FROM numbers({LEARNERS})
        """,
        settings={"async_insert": 0},
    )
    # The default roster's ids follow classes; a district's are hashed (GUID-like).
    enrollment_id = (
        "lower(hex(MD5(toString(number))))"
        if enrollments > LEARNERS
        else "concat('n', toString(number))"
    )
    c.command(
        f"""
        INSERT INTO {db}.roster_enrollments
        SELECT '{TENANT}', {enrollment_id}, {_CLASS.format(l=n)},
            {_LEARNER.format(l=n)}, 'learner', {_SCHOOL.format(l=n)}, 0, 'bench.roster', 0,
            {LEARNERS} + number
        FROM numbers({enrollments})
        """,
        settings={"async_insert": 0},
    )
    # Merged parts, as a store that has run a while would have them.
    merged = ("activity", "engagement_daily", "mastery_latest")
    for table in (*merged, "roster_enrollments") if enrollments > LEARNERS else merged:
        c.command(f"OPTIMIZE TABLE {db}.{table} FINAL")
    # As a start would: the class-keyed roster catches up with the enrollments inserted here.
    store.migrate()
    c.command(f"CREATE TABLE {db}.bench_generated (rows UInt64) ENGINE = Log")
    c.command(f"INSERT INTO {db}.bench_generated VALUES ({rows})")


# Part of the cache's path: bump it when _generate's data or the schema changes (2: roster role
# 'learner'; 3: migration 3's index, built as the data is, not by a mutation during the run).
_DATA_VERSION = 3


def _cached(store: ChdbStore, rows: int) -> bool:
    done = store.client.command(f"EXISTS TABLE {store.database}.bench_generated")
    return bool(int(done))


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(pick(0.95), 2),
        "max_ms": round(ordered[-1], 2),
    }


def run(ctx: BenchContext, enrollments: int = LEARNERS) -> list[BenchResult]:
    if enrollments < LEARNERS or enrollments % 25:
        raise ValueError(f"enrollments: a multiple of 25, at least {LEARNERS}")
    rows = 1_000_000 if ctx.quick else 10_000_000
    runs = 40 if ctx.quick else 100
    roster = f"-e{enrollments}" if enrollments > LEARNERS else ""
    path: Path = ctx.work_dir / f"chdb-activity-{rows}-v{_DATA_VERSION}{roster}"
    store = ChdbStore(path, database="bench")
    started = time.perf_counter()
    try:
        store.migrate()
        reused = _cached(store, rows)
        if not reused:
            _generate(store, rows, enrollments)
        generate_s = time.perf_counter() - started
        counts = store.row_counts(TENANT)

        since = AS_OF - timedelta(days=7)

        def heatmap(i: int) -> int:
            class_id = f"C{(i * 37) % CLASSES:03d}"
            return len(store.class_heatmap(TENANT, class_id, 500).cells)

        def needs_support(i: int) -> int:
            class_id = f"C{(i * 37) % CLASSES:03d}"
            return len(
                store.needs_support(
                    Target(TENANT, class_id=class_id),
                    since=since,
                    until=AS_OF,
                    low_p=0.4,
                    min_attempts=3,
                    min_events=3,
                    limit=500,
                )
            )

        results: list[BenchResult] = []
        for name, query in (("class_heatmap", heatmap), ("needs_support_class", needs_support)):
            answered = [query(i) for i in range(3)]  # warm-up
            samples = []
            for i in range(runs):
                t0 = time.perf_counter()
                query(i)
                samples.append((time.perf_counter() - t0) * 1000)
            stats = _percentiles(samples)
            results.append(
                BenchResult(
                    name=f"reporting.{name}_p95_ms",
                    unit="ms",
                    value=stats["p95_ms"],
                    target=f"p95 < {TARGET_P95_MS:.0f} ms",
                    passed=stats["p95_ms"] < TARGET_P95_MS,
                    figures={
                        "size": "quick" if ctx.quick else "full",
                        **stats,
                        "runs": runs,
                        "rows_answered_warmup": answered,
                        "activity_rows": rows,
                        "enrollments": enrollments,
                        "shape": {
                            "districts": 1,
                            "schools": SCHOOLS,
                            "classes": CLASSES,
                            "learners": LEARNERS,
                            "skills": SKILLS,
                            "months": 4,
                        },
                        "row_counts": counts,
                        "generate_seconds": round(generate_s, 1),
                        "reused_cache": reused,
                    },
                )
            )
        return results
    finally:
        store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="10 million activity rows")
    parser.add_argument("--enrollments", type=int, default=LEARNERS, help="roster size")
    enrollments = parser.parse_args().enrollments
    # Kept between runs: generating 10 million rows takes over a minute.
    cache = Path(__file__).resolve().parents[2] / ".local" / "bench" / "reporting_queries"
    cache.mkdir(parents=True, exist_ok=True)
    run_standalone(functools.partial(run, enrollments=enrollments), cache)
