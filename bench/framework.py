"""What every benchmark module in bench/benchmarks/ provides, and what the runner gives it.

A benchmark module exposes `run(ctx: BenchContext) -> list[BenchResult]`. It measures its subject
and, where one exists, a baseline side by side in the same run (these machines are shared and
noisy, so ratios are what count). `ctx.quick` asks for the reduced size that `make bench-quick`
uses; each module states its quick and full sizes in its docstring. Benchmarks target 127.0.0.1
only, are bounded in count and time, and stop by themselves.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The broker a module run by hand uses: the dev broker of `make up` / `deploy/local/kafka.sh`.
DEV_BROKER = "127.0.0.1:9092"


@dataclass(frozen=True)
class BenchContext:
    quick: bool
    # The broker that the runner started for the benchmarks (topics are the benchmark's own).
    bootstrap_servers: str
    # A fresh directory for this benchmark's files (chDB paths, data dirs, logs).
    work_dir: Path


@dataclass(frozen=True)
class BenchResult:
    name: str  # e.g. "ingest.events_per_second"
    unit: str  # e.g. "events/s", "ms", "rows/s"
    value: float  # Trellis's figure
    baseline: float | None = None  # the baseline measured in the same run, if any
    target: str = ""  # e.g. "ratio >= 0.5", "p99 < 250 ms"
    passed: bool | None = None  # None when there is no target
    figures: dict[str, Any] = field(default_factory=dict)  # sizes, settings, other measurements

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline  # type: ignore[operator]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def run_standalone(
    run: Callable[[BenchContext], list[BenchResult]], work_dir: Path | None = None
) -> None:
    """`python -m bench.benchmarks.<module> [--full]`: one module against the dev broker, in a
    temporary work dir unless `work_dir` is given; prints each result as JSON."""
    with tempfile.TemporaryDirectory() as scratch:
        context = BenchContext(
            quick="--full" not in sys.argv,
            bootstrap_servers=DEV_BROKER,
            work_dir=work_dir or Path(scratch),
        )
        for result in run(context):
            print(json.dumps(result.to_json(), indent=2))
