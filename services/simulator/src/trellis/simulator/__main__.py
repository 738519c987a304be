"""`python -m trellis.simulator generate | load`: wiring only.

generate --out DIR --seed N --learners N ...   a district, its events, truth and evaluation files
load --target 127.0.0.1:50051 --token T --rate 2000|max --duration 30   open-loop load on ingest
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from trellis.simulator.closed_loop import run_closed_loop
from trellis.simulator.district import DistrictConfig, build_district
from trellis.simulator.export import write_simulation
from trellis.simulator.learners import BehaviourConfig
from trellis.simulator.load import (
    make_district,
    make_events,
    new_run_id,
    run_load,
    setup_district,
)
from trellis.simulator.simulation import simulate


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def generate(args: argparse.Namespace) -> None:
    console = Console(stderr=True)
    config = DistrictConfig(
        seed=args.seed,
        tenant_id=args.tenant,
        learners=args.learners,
        schools=args.schools,
        grades=tuple(args.grades.split(",")),
        classes_per_grade=args.classes_per_grade,
        skills_per_grade=args.skills_per_grade,
        items_per_skill=args.items_per_skill,
        resources_per_skill=args.resources_per_skill,
        multi_skill_items=args.multi_skill_items,
    )
    behaviour = BehaviourConfig(
        days=args.days,
        start=datetime.fromisoformat(args.start).replace(tzinfo=UTC),
        policy=args.policy,
        event_prefix=args.event_prefix,
    )
    with _progress(console) as progress:
        task = progress.add_task("learners", total=config.learners, note="")

        def advance(events: int) -> None:
            progress.update(task, advance=1, note=f"{events} events")

        simulation = simulate(config, behaviour, args.test_fraction, advance)
        write = progress.add_task("writing", total=1, note=str(args.out))
        counts = write_simulation(simulation, args.out)
        progress.update(write, advance=1)
    print(", ".join(f"{name}: {n}" for name, n in counts.items()))


def load(args: argparse.Namespace) -> None:
    console = Console(stderr=True)
    rate = None if args.rate == "max" else float(args.rate)
    planned = args.max_events if rate is None else min(args.max_events, int(rate * args.duration))
    if args.setup:
        district = make_district(args.learners, args.seed, args.tenant)
        with console.status(f"upserting the catalog and roster of {args.learners} learners"):
            stored = asyncio.run(setup_district(args.target, args.token, district))
        console.print(f"setup: {stored}")
    with console.status(f"simulating {planned} events of {args.learners} learners"):
        events = make_events(planned, args.learners, args.seed, new_run_id())
    with _progress(console) as progress:
        task = progress.add_task(f"load {args.rate}/s", total=len(events), note=args.target)
        report = asyncio.run(
            run_load(
                args.target,
                args.token,
                args.tenant,
                events,
                rate,
                args.duration,
                batch=args.batch,
                concurrency=args.concurrency,
                pids=args.pid,
                on_progress=lambda n: progress.update(task, advance=n),
            )
        )
    if args.json:
        print(json.dumps(report.to_json()))
        return
    print(
        f"offered {args.rate} events/s for {args.duration} s: sent {report.events_sent} events in"
        f" {report.requests} requests over {report.duration_s} s -> achieved"
        f" {report.achieved_rate} events/s stored ({report.answered_rate} events/s answered)"
    )
    print(f"statuses: {report.statuses}  rpc errors: {report.rpc_errors or 'none'}")
    print(f"latency per request (from its due time), ms: {report.latency_ms}")
    print(f"late starts (> 10 ms after due): {report.late_requests}")
    print(f"CPU % (100 = one core): {report.cpu_percent}")


def closed_loop(args: argparse.Namespace) -> None:
    console = Console(stderr=True)
    config = DistrictConfig(seed=args.seed, tenant_id=args.tenant, learners=args.learners)
    behaviour = BehaviourConfig(
        days=args.days,
        start=datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        - timedelta(days=args.days + 1),
        event_prefix=f"loop-{new_run_id()}-",
    )
    with _progress(console) as progress:
        task = progress.add_task("closed loop", total=None, note="events")
        simulation, report = run_closed_loop(
            args.ingest,
            args.recommender,
            args.token,
            build_district(config),
            behaviour,
            settle_s=args.settle_ms / 1000,
            on_event=lambda: progress.update(task, advance=1),
        )
    if args.out:
        write_simulation(simulation, args.out)
    print(json.dumps(asdict(report)))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m trellis.simulator")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="simulate a district and write its files")
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--learners", type=int, default=48)
    gen.add_argument("--schools", type=int, default=1)
    gen.add_argument("--grades", default="5", help="comma-separated, e.g. 4,5")
    gen.add_argument("--classes-per-grade", type=int, default=2, help="per school")
    gen.add_argument("--skills-per-grade", type=int, default=6)
    gen.add_argument("--items-per-skill", type=int, default=6)
    gen.add_argument("--resources-per-skill", type=int, default=2)
    gen.add_argument(
        "--multi-skill-items", type=float, default=0.0, help="share of items with two skills"
    )
    gen.add_argument("--days", type=int, default=28)
    gen.add_argument("--start", default="2026-09-07", help="first day (UTC)")
    gen.add_argument("--policy", choices=("fixed", "random"), default="fixed")
    gen.add_argument("--tenant", default="demo-district")
    gen.add_argument("--event-prefix", default="sim-")
    gen.add_argument("--test-fraction", type=float, default=0.2)

    ld = commands.add_parser("load", help="open-loop load on ingest (loopback only)")
    ld.add_argument("--target", default="127.0.0.1:50051")
    ld.add_argument("--token", required=True, help="bearer token of a service principal")
    ld.add_argument("--tenant", default="demo-district")
    ld.add_argument("--rate", default="1000", help="offered events/s, or 'max'")
    ld.add_argument("--duration", type=float, default=30.0, help="seconds (upper bound)")
    ld.add_argument("--max-events", type=int, default=200_000, help="upper bound on events")
    ld.add_argument("--learners", type=int, default=2000, help="concurrent simulated learners")
    ld.add_argument("--batch", type=int, default=10, help="events per RecordEvents call")
    ld.add_argument("--concurrency", type=int, default=64, help="requests in flight, at most")
    ld.add_argument("--seed", type=int, default=2026, help="2026: the demo district's catalog")
    ld.add_argument(
        "--setup", action="store_true", help="first upsert the load district's catalog and roster"
    )
    ld.add_argument("--pid", type=int, action="append", default=[], help="also report its CPU")
    ld.add_argument("--json", action="store_true", help="print the report as JSON")

    loop = commands.add_parser(
        "closed-loop", help="learners follow the recommender; events go to ingest as they happen"
    )
    loop.add_argument("--ingest", default="127.0.0.1:50051")
    loop.add_argument("--recommender", default="127.0.0.1:50053")
    loop.add_argument("--token", required=True, help="bearer token of a service principal")
    loop.add_argument("--tenant", default="demo-district")
    loop.add_argument("--learners", type=int, default=6)
    loop.add_argument("--days", type=int, default=5)
    loop.add_argument("--seed", type=int, default=2026)
    loop.add_argument("--settle-ms", type=float, default=50.0, help="wait after each attempt")
    loop.add_argument("--out", type=Path, help="also write events, truth and evaluation files")

    args = parser.parse_args()
    if args.command == "generate":
        generate(args)
    elif args.command == "load":
        load(args)
    else:
        closed_loop(args)


if __name__ == "__main__":
    main()
