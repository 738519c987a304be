"""The sink in a decoding process of its own, beside the process that owns the store.

Why: in one process the sink's Python (kafka-python's fetch parsing, protobuf reads, rows, the
column serialization of the inserts) all ran under one GIL, on one of the machine's cores; only
chDB's own insert work used the other. Here the decoding process polls (kafka-python's fetch
parsing) and the owner projects (the rest), so the two halves run side by side.

Who does what:
- The decoding process (started with `spawn`: a fresh interpreter, nothing forked from the
  owner's threads, no chDB) runs `ReportingSink`: the consumer and its group, the rebalance
  listener and its workaround, batches of records as read, dead letters, commits, retries with
  backoff. Its projector is `RemoteProjector`: a batch's records are sent to the owner, which
  projects them and answers once the store confirmed the inserts; the sink commits offsets only
  after that answer, as it does after a local projection.
- The owner (the reporting process: chDB, gRPC queries, metrics) runs the projection
  (`trellis.reporting.projection`: decoding, rows, stored positions, the erasure filter,
  deduplication tokens, Native serialization, inserts, erasures) on one thread (`SinkProcess`),
  beside the decoding process's polling: kafka-python's record parsing there (about 10 us per
  record) and the projection here (about 14-25 us), where the decoding process used to poll and
  map one after the other. It takes the decoding process's counters and metrics from its reports.
  The cost: that Python shares the owner's GIL with the gRPC queries.

Crashes:
- The decoding process dies (kill -9, a bug): the owner sees it end, reports unhealthy and starts
  another after a backoff. Its uncommitted records are read again from the committed offsets; the
  stored positions drop those that were inserted already (the sink's usual crash path).
- The owner dies: the decoding process sees its parent's end (the spawn pipe's sentinel, whichever
  thread started it), stops at once (a call in flight fails, nothing more is committed) and leaves
  the group; after a grace it exits hard. Nothing it had not been told was stored is committed.
- Stop: SIGTERM to the decoding process, which flushes (the owner still serves its last batch),
  commits and leaves the group, as `ReportingSink.stop` does.

One decoding process, not one per subset of partitions: the projection's stored positions are per
process and one batch is projected at a time (several would need fencing; see the README).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from trellis.common.logging import configure_logging, get_logger
from trellis.common.pb.events.v1 import envelope_pb2
from trellis.common.settings import Settings
from trellis.reporting.background import BackgroundLoop
from trellis.reporting.projection import Projector, RawRecord, Totals, stream_topics
from trellis.reporting.sink import ReportingSink, SinkMetrics, SinkStats
from trellis.reporting.store.base import StoreError
from trellis.reporting.store.clickhouse import ClickHouseStore

__all__ = ["SinkProcess"]

_log = get_logger("trellis.reporting.sink")
_RESTART_FIRST_S = 0.5
_RESTART_MAX_S = 10.0
# The decoding process reports after each poll that read records and each commit, and at least
# this often (health); it may take this long to leave after its owner died.
_REPORT_S = 0.5
_ORPHAN_GRACE_S = 10.0
_METRICS = frozenset({"rows", "dead_letters", "retry", "rejoin", "flush"})


@dataclass
class _Report:
    """Decoding process -> owner: its counters, its state and the metric calls since the last."""

    stats: SinkStats
    running: bool
    healthy: bool
    metrics: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)


class SinkProcess(BackgroundLoop):
    """`ReportingSink` in a decoding process, used like it (start, stop, running, healthy)."""

    def __init__(self, settings: Settings, store: ClickHouseStore) -> None:
        super().__init__()
        self._settings = settings
        self._store = store
        self._calls: dict[str, Callable[..., Any]] = {}
        self._metrics = SinkMetrics()
        self._child_healthy = False
        self.stats = SinkStats()

    @property
    def healthy(self) -> bool:
        return self.running.is_set() and self._child_healthy

    # --- owner side ---

    def run(self) -> None:
        """Serve the decoding process, starting another after a backoff when it dies."""
        # The projection allocates tens of thousands of objects per batch, so full collections
        # come every batch or two: what this process holds by now (modules, the service) lives as
        # long as it, and need not be walked each time (0.1 s per collection in the benchmark).
        gc.freeze()
        delay = _RESTART_FIRST_S
        while not self._stop.is_set():
            started = time.monotonic()
            exitcode = self._run_child()
            self.running.clear()
            self._child_healthy = False
            if self._stop.is_set():
                break
            _log.error("the sink's decoding process ended; starting another", exitcode=exitcode)
            if time.monotonic() - started > 60:
                delay = _RESTART_FIRST_S
            self._stop.wait(delay)
            delay = min(delay * 2, _RESTART_MAX_S)
        _log.info("sink process stopped", **_stats_fields(self.stats))

    def _run_child(self) -> int | None:
        # A new decoding process projects with a new projector (it reads the positions first).
        projector = Projector(self._store, stream_topics(self._settings.kafka))
        self._calls = {
            "project": lambda columns, reload: projector.project(zip(*columns, strict=True), reload)
        }
        context = multiprocessing.get_context("spawn")
        calls, child_calls = context.Pipe()
        reports, child_reports = context.Pipe(duplex=False)
        process = context.Process(
            target=_child_main,
            args=(self._settings, child_calls, child_reports),
            name="reporting-sink-decoder",
            daemon=True,
        )
        process.start()
        child_calls.close()
        child_reports.close()
        terminated = False
        pipes: list[Any] = [calls, reports]
        try:
            # Until the process has ended and its pipes are drained (its last report included).
            while pipes or process.is_alive():
                if self._stop.is_set() and not terminated:
                    process.terminate()  # SIGTERM: the sink flushes, commits and leaves
                    terminated = True
                waitables: list[Any] = [*pipes, process.sentinel] if process.is_alive() else pipes
                for ready in wait(waitables, timeout=0.1):
                    if ready is not process.sentinel and not self._receive(ready, calls):
                        pipes.remove(ready)
        finally:
            if process.is_alive():
                process.kill()
            process.join()
            calls.close()
            reports.close()
        return process.exitcode

    def _receive(self, ready: Any, calls: Connection) -> bool:
        """Serve one call or take one report; False once that pipe is closed."""
        try:
            message = ready.recv()
        except (EOFError, OSError):
            return False
        if ready is not calls:
            self._take(message)
            return True
        op, args = message
        try:
            result = ("ok", self._calls[op](*args))
        except Exception as exc:
            result = ("error", f"{type(exc).__name__}: {exc}")
        try:
            calls.send(result)
        except OSError:
            return False
        return True

    def _take(self, report: _Report) -> None:
        self.stats = report.stats
        self._child_healthy = report.healthy
        if report.running:
            self.running.set()
        else:
            self.running.clear()
        for name, args in report.metrics:
            if name in _METRICS:
                getattr(self._metrics, name)(*args)


# --- decoding process side ---


class RemoteProjector:
    """The owner's projector seen from the decoding process: records go there as read."""

    def __init__(self, calls: Connection) -> None:
        self._calls = calls

    def project(
        self, records: Iterable[RawRecord], reload: bool
    ) -> tuple[list[envelope_pb2.DeadLetter], Totals]:
        self._calls.send(("project", (list(zip(*records, strict=True)), reload)))
        status, value = self._calls.recv()
        if status != "ok":
            raise StoreError(value)
        letters, totals = value
        return letters, totals


class _RelayedMetrics(SinkMetrics):
    """Metric calls kept for the next report (the owner applies them to its Prometheus)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self.changed = threading.Event()

    def _keep(self, name: str, *args: Any) -> None:
        with self._lock:
            self._pending.append((name, args))
        self.changed.set()

    def drain(self) -> list[tuple[str, tuple[Any, ...]]]:
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    def rows(self, table: str, count: int) -> None:
        self._keep("rows", table, count)

    def dead_letters(self, count: int) -> None:
        self._keep("dead_letters", count)

    def retry(self, op: str) -> None:
        self._keep("retry", op)

    def rejoin(self) -> None:
        self._keep("rejoin")

    def flush(self, seconds: float) -> None:
        self._keep("flush", seconds)

    def progress(self) -> None:
        self.changed.set()


def _child_main(settings: Settings, calls: Connection, reports: Connection) -> None:
    """The decoding process: the sink loop on the main thread, a reporter and a parent watcher."""
    # Ctrl-C reaches the whole process group: the owner decides when this process stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings.log_level)
    # What is loaded by now lives as long as the process: full collections need not walk it.
    gc.freeze()
    metrics = _RelayedMetrics()
    sink = ReportingSink(settings, projector=RemoteProjector(calls), metrics=metrics)
    signal.signal(signal.SIGTERM, lambda *_: sink.stop())
    done = threading.Event()
    threading.Thread(target=_watch_owner, args=(sink,), name="owner-watch", daemon=True).start()
    reporter = threading.Thread(
        target=_report, args=(sink, metrics, reports, done), name="sink-report", daemon=True
    )
    reporter.start()
    try:
        sink.run()
    finally:
        done.set()
        metrics.changed.set()
        reporter.join(5.0)


def _watch_owner(sink: ReportingSink) -> None:
    """Stop when the owner process ends (even by kill -9); exit hard if stopping takes too long."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    wait([parent.sentinel])
    _log.warning("the reporting process is gone: the sink's decoding process stops")
    sink.stop()
    time.sleep(_ORPHAN_GRACE_S)
    os._exit(1)


def _report(
    sink: ReportingSink, metrics: _RelayedMetrics, reports: Connection, done: threading.Event
) -> None:
    """Send the counters, state and metric calls whenever they changed (and once at the end)."""
    last: tuple[Any, ...] | None = None
    while True:
        metrics.changed.wait(_REPORT_S)
        metrics.changed.clear()
        finished = done.is_set()
        stats = sink.stats
        key = (
            sink.running.is_set(),
            sink.healthy,
            stats.consumed,
            stats.flushes,
            stats.commits,
            stats.retries,
            sum(stats.inserted.values()),
        )
        pending = metrics.drain()
        if pending or key != last or finished:
            report = _Report(_copy(stats), key[0] and not finished, key[1], pending)
            try:
                reports.send(report)
            except OSError:
                return
            last = key
        if finished:
            return


def _copy(stats: SinkStats) -> SinkStats:
    fields = {name: getattr(stats, name) for name in SinkStats.__dataclass_fields__}
    return SinkStats(**{**fields, "inserted": defaultdict(int, fields["inserted"])})


def _stats_fields(stats: SinkStats) -> Mapping[str, Any]:
    return {
        "consumed": stats.consumed,
        "inserted": dict(stats.inserted),
        "dead_letters": stats.dead_letters,
    }
