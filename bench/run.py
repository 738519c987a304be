"""`make bench` / `make bench-quick`: every benchmark of bench/benchmarks/ on a broker of its own.

    .venv/bin/python bench/run.py [--quick] [--only NAME ...] [--port 29092]

Starts Apache Kafka with `deploy/local/kafka.sh` (KAFKA_PORT=29092, a fresh KAFKA_HOME under
.local/bench/), runs each module's `run(ctx)` in file-name order, writes
bench/results/latest.json and prints a table; the broker is stopped and its data removed at the
end whatever happens (an error, Ctrl-C, SIGTERM), and so are the benchmarks' work files (chDB
paths, data dirs) unless `--keep`. A benchmark that raises is recorded as an error
and the others still run; the exit status is 1 if any benchmark raised, else 0 (a missed target is
reported, not an error).
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.framework import BenchContext, BenchResult  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "latest.json"
KAFKA_SH = ROOT / "deploy" / "local" / "kafka.sh"


def discover(only: list[str]) -> list[str]:
    names = sorted(
        p.stem for p in (ROOT / "bench" / "benchmarks").glob("*.py") if p.stem != "__init__"
    )
    return [n for n in names if not only or n in only]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class Broker:
    """The benchmarks' own broker: fresh data, its own port; `close()` stops and removes it."""

    def __init__(self, port: int, home: Path) -> None:
        self.env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_HOME": str(home)}
        self.bootstrap = f"127.0.0.1:{port}"

    def _kafka(self, command: str) -> None:
        subprocess.run([str(KAFKA_SH), command], env=self.env, check=True, cwd=ROOT)

    def start(self) -> None:
        self._kafka("clean")
        self._kafka("start")

    def close(self) -> None:
        self._kafka("clean")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally` that stops the broker


def run_all(
    names: list[str], quick: bool, broker: Broker, work: Path, console: Console
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for name in names:
        console.rule(f"[bold]{name}[/bold] ({'quick' if quick else 'full'})")
        started = time.monotonic()
        ctx = BenchContext(quick=quick, bootstrap_servers=broker.bootstrap, work_dir=work / name)
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            module = importlib.import_module(f"bench.benchmarks.{name}")
            results: list[BenchResult] = module.run(ctx)
        except Exception as exc:
            traceback.print_exc()
            entries.append(
                {
                    "module": name,
                    "name": name,
                    "error": f"{type(exc).__name__}: {exc}",
                    "passed": False,
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
            continue
        seconds = round(time.monotonic() - started, 1)
        for result in results:
            entries.append({"module": name, **result.to_json(), "seconds": seconds})
        console.print(f"{name}: {len(results)} result(s) in {seconds} s")
    return entries


def _figure(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"
    return f"{text} {unit}".strip()


def table(entries: list[dict[str, Any]], title: str) -> Table:
    out = Table(title=title)
    for column in ("benchmark", "Trellis", "baseline", "ratio", "target", "result"):
        out.add_column(
            column, justify="right" if column in ("Trellis", "baseline", "ratio") else "left"
        )
    for e in entries:
        if "error" in e:
            out.add_row(e["name"], "-", "-", "-", "-", f"[red]ERROR[/red] {e['error'][:60]}")
            continue
        verdict = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "-"}[e["passed"]]
        ratio = "-" if e["ratio"] is None else f"{e['ratio']:.2f}"
        out.add_row(
            e["name"],
            _figure(e["value"], e["unit"]),
            _figure(e["baseline"], e["unit"]),
            ratio,
            e["target"] or "-",
            verdict,
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="every benchmark at its reduced size")
    parser.add_argument(
        "--only", nargs="*", default=[], help="module names (bench/benchmarks/NAME.py)"
    )
    parser.add_argument("--port", type=int, default=29092, help="the benchmarks' broker port")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--keep", action="store_true", help="keep the benchmarks' work files (.local/bench/run-*)"
    )
    args = parser.parse_args()

    console = Console(width=None if sys.stdout.isatty() else 140)
    names = discover(args.only)
    if not names:
        console.print("no benchmarks found in bench/benchmarks/")
        return 1
    # One run at a time on this machine: two would share (and stop) the broker on the same port.
    (ROOT / ".local" / "bench").mkdir(parents=True, exist_ok=True)
    lock = (ROOT / ".local" / "bench" / f".run-{args.port}.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        console.print("another benchmark run holds the broker port: waiting for it to end")
        fcntl.flock(lock, fcntl.LOCK_EX)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = ROOT / ".local" / "bench" / f"run-{stamp}"
    broker = Broker(args.port, ROOT / ".local" / "bench" / f"kafka-{args.port}")
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    entries: list[dict[str, Any]] = []
    try:
        broker.start()
        entries = run_all(names, args.quick, broker, work, console)
    finally:
        broker.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "started_at": stamp,
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
        "machine": machine(),
        "broker": f"Apache Kafka (deploy/local/kafka.sh) on {broker.bootstrap}",
        "benchmarks": entries,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    title = (
        f"Trellis benchmarks ({'quick' if args.quick else 'full'}, {report['seconds']} s in all)"
    )
    console.print(table(entries, title))
    console.print(f"written: {args.output}")
    return 1 if any("error" in e for e in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
