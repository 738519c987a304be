"""The reporting sink: mastery, activity and roster topics -> batched ClickHouse inserts.

Effectively once. One kafka-python consumer (group `settings.reporting.consumer_group`, no
auto-commit) reads the three topics. Records are batched as they were read: a batch is flushed at
`batch_max_rows` records or `batch_max_seconds` after its first record, never row by row.

A flush, in this order:
1. the batch's records are projected (`trellis.reporting.projection`): mapped to rows by
   `trellis.reporting.rows` and, per table, the rows that the table does not hold yet (stored
   positions; erased learners dropped) inserted in one block, with an
   `insert_deduplication_token` built from the topic/partition/offset ranges of the block; the
   batch's erasures applied;
2. undecodable records (or not valid rows) go to the dead-letter topic (waiting for Kafka's ack);
   the sink goes on;
3. only then are the offsets committed.

Steps 1-3 overlap with consuming: the flush of a batch runs on one worker thread while the sink
thread polls the next batch; the sink thread commits a batch's offsets once its flush has returned
(checked after every poll, and before the next batch is handed over), so inserts stay in offset
order, one at a time, and no offset is committed before its rows are stored. The commit is sent
without waiting for Kafka's answer, which a later poll delivers: a failed one is retried like
before; at stop the sink commits again, waiting, whatever is not confirmed. The projection runs
on the worker thread with a local store, or in the process that owns the store when the sink runs
in a decoding process (`trellis.reporting.sink_process`).

Why no record is ever stored twice, and erasures: `trellis.reporting.projection`. After each
partition assignment the projection reads the stored positions and erased learners again.

Failures: store or Kafka errors are retried with exponential backoff (the sink never gives up on
data and never skips it); a stop request ends the retries, leaving the batch uncommitted.

Threading: `run()` is the loop; `start()` runs it in a daemon thread. kafka-python 3 calls the
rebalance listener on its IO thread, where blocking calls are not allowed: the listener only
records what happened, and the sink thread acts on it once the new assignment is known: it drops
the uncommitted records of the partitions that went to another member (that member reads them from
the committed offsets) and has the stored positions read again before its next projection. Records
of a partition revoked and assigned back to this member are kept: kafka-python keeps such a
partition's fetch position across the rebalance, so they would not be fetched again. (Were they
fetched again, after an eviction, the copies are dropped as already stored.)
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import Counter, Histogram

from trellis.common.kafka import create_consumer, create_producer, send_dead_letters
from trellis.common.logging import get_logger
from trellis.common.pb.events.v1 import envelope_pb2
from trellis.common.settings import Settings
from trellis.reporting.background import BackgroundLoop
from trellis.reporting.projection import (
    BatchProjector,
    Projector,
    RawRecord,
    SinkStore,
    Totals,
    stream_topics,
)
from trellis.reporting.store.base import PartitionKey

__all__ = ["ReportingSink", "SinkMetrics", "SinkStats"]

_BACKOFF_FIRST_S = 0.2
_BACKOFF_MAX_S = 10.0

_log = get_logger("trellis.reporting.sink")
_T = TypeVar("_T")

ROWS_INSERTED = Counter(
    "trellis_reporting_sink_rows", "Rows inserted into the reporting store, by table.", ["table"]
)
DEAD_LETTERS = Counter(
    "trellis_reporting_sink_dead_letters", "Records sent to the dead-letter topic."
)
RETRIES = Counter(
    "trellis_reporting_sink_retries",
    "Failed store or Kafka operations retried, by operation.",
    ["op"],
)
REJOINS = Counter(
    "trellis_reporting_sink_rejoins",
    "Fresh group joins asked for because a rebalance did not complete (kafka-python bug).",
)
FLUSH_SECONDS = Histogram(
    "trellis_reporting_sink_flush_seconds",
    "Time to flush one batch: dead letters, inserts and sending the offset commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


class SinkMetrics:
    """Where the sink counts: Prometheus of this process. A sink in a decoding process relays the
    same calls to the process that serves the metrics (`trellis.reporting.sink_process`)."""

    def rows(self, table: str, count: int) -> None:
        ROWS_INSERTED.labels(table).inc(count)

    def dead_letters(self, count: int) -> None:
        DEAD_LETTERS.inc(count)

    def retry(self, op: str) -> None:
        RETRIES.labels(op).inc()

    def rejoin(self) -> None:
        REJOINS.inc()

    def flush(self, seconds: float) -> None:
        FLUSH_SECONDS.observe(seconds)

    def progress(self) -> None:
        """Records were consumed, or a batch was stored and committed (`stats` changed)."""


class _Stopped(Exception):
    """A stop was requested while an operation kept failing."""


@dataclass
class SinkStats:
    """Counters since start, for tests, logs and health."""

    consumed: int = 0
    inserted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    already_stored: int = 0
    erased_rows_dropped: int = 0
    erasures: int = 0
    dead_letters: int = 0
    not_projected: int = 0
    flushes: int = 0
    commits: int = 0
    retries: int = 0
    rejoins: int = 0


@dataclass
class _Batch:
    started: float | None = None
    records: list[RawRecord] = field(default_factory=list)
    # Next offset to commit, per partition.
    next_offsets: dict[PartitionKey, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def discard(self, partitions: set[PartitionKey]) -> int:
        """Forget the records of partitions this consumer lost; returns how many were dropped."""
        for key in partitions & set(self.next_offsets):
            del self.next_offsets[key]
        kept = [r for r in self.records if (r[0], r[1]) not in partitions]
        dropped = len(self.records) - len(kept)
        self.records = kept
        if not self.next_offsets:
            self.started = None
        return dropped


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on kafka-python's IO thread: records the change, does no I/O."""

    def __init__(self, sink: ReportingSink, consumer: KafkaConsumer) -> None:
        self._sink = sink
        self._consumer = consumer

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Called as a join begins. Work around a kafka-python 3.0.12 bug: a join begun by a
        # metadata change is wanted only until the leader's assignment takes the new metadata in,
        # so if a poll's timeout leaves it in flight then, no later poll completes it (the member
        # stays rebalancing, heartbeats off, fetching nothing). Marked as wanted, the join stays
        # wanted until it completes. Only a flag is set here.
        self._consumer._coordinator.request_rejoin()
        self._sink._note_revoked({(tp.topic, tp.partition) for tp in revoked})

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._sink._note_assigned({(tp.topic, tp.partition) for tp in assigned})


class ReportingSink(BackgroundLoop):
    """Consumes the mastery, activity and roster topics into the reporting store."""

    def __init__(
        self,
        settings: Settings,
        store: SinkStore | None = None,
        *,
        projector: BatchProjector | None = None,
        consumer_factory: Callable[[], KafkaConsumer] | None = None,
        metrics: SinkMetrics | None = None,
    ) -> None:
        """Projects into `store` on the sink's insert thread, or through `projector` (the owner's,
        seen from a decoding process)."""
        super().__init__()
        self._kafka = settings.kafka
        self._group = settings.reporting.consumer_group
        self._max_records = max(1, settings.reporting.batch_max_rows)
        self._max_seconds = settings.reporting.batch_max_seconds
        self._metrics = metrics or SinkMetrics()
        self._streams = stream_topics(self._kafka)
        if projector is None:
            if store is None:
                raise ValueError("the sink needs a store or a projector")
            projector = Projector(store, self._streams)
        self._projector = projector
        self._consumer_factory = consumer_factory or self._create_consumer
        self._producer: KafkaProducer | None = None
        # Listener -> sink thread.
        self._lock = threading.Lock()
        self._revoked: set[PartitionKey] = set()
        self._assigned: set[PartitionKey] = set()
        # When partitions were revoked with the new assignment not known yet (None: not
        # rebalancing).
        self._rebalancing_since: float | None = None
        # Partitions were assigned since the projection last read the stored positions.
        self._positions_stale = True
        self._totals = Totals()
        self._batch = _Batch()
        # The batch whose insert runs on the worker, committed by the sink thread when it is done.
        self._inflight: tuple[Future[None], _Batch, float] | None = None
        self._inserter: ThreadPoolExecutor | None = None
        # Next offsets whose records are stored but whose commit failed (a rebalance, the broker
        # away): committed with the next batch, or retried while idle.
        self._uncommitted: dict[PartitionKey, int] = {}
        self._commit_retry_at = 0.0
        # Next offsets sent in commits Kafka has not answered yet, and those it confirmed.
        self._commits_in_flight: dict[PartitionKey, int] = {}
        self._commits_confirmed: dict[PartitionKey, int] = {}
        self._failing = False
        self.stats = SinkStats()

    @property
    def topics(self) -> list[str]:
        return list(self._streams)

    @property
    def healthy(self) -> bool:
        """Polling, and the last store and Kafka operations succeeded."""
        return self.running.is_set() and not self._failing

    # --- lifecycle ---

    def run(self) -> None:
        """The consume-batch-insert-commit loop, until `stop()`."""
        try:
            # The broker may still be starting: kafka-python refuses to build a consumer then.
            consumer = self._retry("connect", self._consumer_factory)
        except _Stopped:
            return
        self._inserter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reporting-insert")
        try:
            if not self._await_topics(consumer):
                return
            consumer.subscribe(topics=self.topics, listener=_Listener(self, consumer))
            self.running.set()
            _log.info("sink started", topics=self.topics, group=self._group)
            while not self._stop.is_set():
                try:
                    self._poll_once(consumer)
                    self._unstick_rebalance(consumer)
                    self._reap(consumer, wait=False)
                    self._retry_commit(consumer)
                    if self._due():
                        self._flush(consumer)
                except _Stopped:
                    raise
                except Exception as exc:
                    # A bug, not an outage (those are retried where they happen): keep going;
                    # stored positions make a re-flush of the same records harmless.
                    _log.exception("sink loop error")
                    self._failed("loop", exc)
                    self._stop.wait(_BACKOFF_MAX_S)
            self._flush(consumer)
            self._reap(consumer, wait=True)
            self._settle_commits(consumer)
        except _Stopped:
            _log.warning("sink stopped with an uncommitted batch", records=len(self._batch))
        finally:
            self.running.clear()
            # An insert still running ends by itself (its retries stop); its batch stays
            # uncommitted and is read again from the committed offsets.
            self._inserter.shutdown(wait=True)
            self._inflight = None
            self._close(consumer)
            _log.info("sink stopped", **self._stats_fields())

    def _await_topics(self, consumer: KafkaConsumer) -> bool:
        """Wait until the broker knows every topic (the stack creates them; no auto-create).

        Subscribing earlier would let the group assign nothing and, with metadata refreshed only
        every few minutes, idle that long. False if a stop came first.
        """
        while True:
            try:
                missing = [t for t in self.topics if not consumer.partitions_for_topic(t)]
            except Exception as exc:
                self._failed("metadata", exc)
                missing = self.topics
            if not missing:
                self._failing = False
                return True
            _log.warning("waiting for topics", topics=missing)
            if self._stop.wait(1.0):
                return False

    def _create_consumer(self) -> KafkaConsumer:
        return create_consumer(
            self._kafka,
            self._group,
            client_id=f"{self._kafka.client_id}-reporting",
            max_poll_records=self._max_records,
        )

    def _close(self, consumer: KafkaConsumer) -> None:
        try:
            consumer.close(autocommit=False)
        except Exception:
            _log.exception("closing the consumer failed")
        if self._producer is not None:
            try:
                self._producer.close(timeout=self._kafka.request_timeout_ms / 1000)
            except Exception:
                _log.exception("closing the dead-letter producer failed")
            self._producer = None

    # --- rebalance notes (IO thread) ---

    def _note_revoked(self, partitions: set[PartitionKey]) -> None:
        with self._lock:
            self._revoked |= partitions
            self._assigned = set()  # what counts is the assignment that follows
            if self._rebalancing_since is None:
                self._rebalancing_since = time.monotonic()

    def _note_assigned(self, partitions: set[PartitionKey]) -> None:
        with self._lock:
            self._assigned |= partitions
            self._rebalancing_since = None
            self._positions_stale = True

    # --- consuming ---

    def _poll_once(self, consumer: KafkaConsumer) -> None:
        if self._batch.started is None:
            wait_s = self._max_seconds
        else:
            wait_s = max(0.0, self._batch.started + self._max_seconds - time.monotonic())
        if self._inflight is not None:
            wait_s = min(wait_s, 0.05)  # come back soon to commit the batch being inserted
        try:
            polled = consumer.poll(
                timeout_ms=int(wait_s * 1000), max_records=self._max_records - len(self._batch)
            )
        except Exception as exc:
            # Broker trouble: kafka-python reconnects by itself; back off and poll again.
            self._failed("poll", exc)
            self._stop.wait(_BACKOFF_FIRST_S)
            return
        self._apply_revocations()
        if not polled:
            return
        # A report sent now tells when records came in (the benchmark's clock starts there, as
        # the bare loop's does at its poll).
        self.stats.consumed += sum(map(len, polled.values()))
        self._metrics.progress()
        batch = self._batch
        if batch.started is None:
            batch.started = time.monotonic()
        for records in polled.values():
            # As read: the projection decodes them (where the store is).
            batch.records.extend(map(_raw_record, records))
            last = records[-1]
            batch.next_offsets[(last.topic, last.partition)] = last.offset + 1

    def _apply_revocations(self) -> None:
        """Drop the records of revoked partitions that the new assignment did not give back."""
        with self._lock:
            if self._rebalancing_since is not None:
                return
            lost = self._revoked - self._assigned
            self._revoked, self._assigned = set(), set()
        if lost and len(self._batch):
            dropped = self._batch.discard(lost)
            _log.info("partitions revoked: uncommitted records dropped", rows=dropped)

    def _due(self) -> bool:
        batch = self._batch
        if batch.started is None:
            return False
        return (
            len(batch) >= self._max_records or time.monotonic() - batch.started >= self._max_seconds
        )

    # --- flushing ---

    def _flush(self, consumer: KafkaConsumer) -> None:
        """Hand the batch to the insert worker, once the previous one is inserted and committed."""
        self._reap(consumer, wait=True)
        self._apply_revocations()
        batch = self._batch
        if not batch.next_offsets:
            self._batch = _Batch()
            return
        started = time.perf_counter()
        assert self._inserter is not None
        future = self._inserter.submit(self._store_batch, batch)
        self._inflight = (future, batch, started)
        self._batch = _Batch()

    def _reap(self, consumer: KafkaConsumer, *, wait: bool) -> None:
        """Commit the batch handed to the insert worker once its insert returned.

        Raises _Stopped when a stop ended the insert's retries (the batch stays uncommitted)."""
        if self._inflight is None:
            return
        future, batch, started = self._inflight
        if not wait and not future.done():
            return
        try:
            future.result()
        finally:
            self._inflight = None
        self._commit(consumer, batch.next_offsets)
        self.stats.flushes += 1
        self._metrics.progress()
        self._metrics.flush(time.perf_counter() - started)

    def _store_batch(self, batch: _Batch) -> None:
        """Project the batch (insert, erasures), then send its dead letters; on the worker."""
        letters = self._retry("insert", lambda: self._project(batch))
        if letters:
            self._retry(
                "dead_letters", lambda: send_dead_letters(self._dlq(), self._kafka, letters)
            )
            self.stats.dead_letters += len(letters)
            self._metrics.dead_letters(len(letters))
            _log.warning("records sent to the dead-letter topic", count=len(letters))

    def _project(self, batch: _Batch) -> list[envelope_pb2.DeadLetter]:
        with self._lock:
            stale, self._positions_stale = self._positions_stale, False
        # (The projector keeps reading the positions until a read succeeded.)
        letters, totals = self._projector.project(batch.records, stale)
        self._count(totals)
        return letters

    def _count(self, totals: Totals) -> None:
        """Take the projection's totals (it may run in another process) into the counters."""
        stats = self.stats
        for table, count in totals.inserted.items():
            added = count - self._totals.inserted.get(table, 0)
            if added:
                stats.inserted[table] += added
                self._metrics.rows(table, added)
        stats.already_stored += totals.already_stored - self._totals.already_stored
        stats.erased_rows_dropped += totals.erased_rows_dropped - self._totals.erased_rows_dropped
        stats.erasures += totals.erasures - self._totals.erasures
        stats.not_projected += totals.not_projected - self._totals.not_projected
        self._totals = Totals(
            defaultdict(int, totals.inserted),
            totals.already_stored,
            totals.erased_rows_dropped,
            totals.erasures,
            totals.not_projected,
        )

    def _commit(self, consumer: KafkaConsumer, next_offsets: Mapping[PartitionKey, int]) -> None:
        """Commit these stored offsets and those an earlier commit failed to land.

        Sent without waiting for the answer (a round trip of 10-30 ms that kept the sink thread
        from polling); Kafka's answer comes to `_commit_answered` in a later poll."""
        pending = self._uncommitted
        for key, offset in next_offsets.items():
            pending[key] = max(offset, pending.get(key, 0))
        # A partition gone to another member is theirs to commit (they re-read from the last
        # committed offset; the stored positions drop what is stored already).
        assigned = _assigned(consumer)
        for key in set(pending) - assigned:
            del pending[key]
        if not pending:
            return
        self._uncommitted = {}
        in_flight = self._commits_in_flight
        for key, offset in pending.items():
            in_flight[key] = max(offset, in_flight.get(key, 0))
        try:
            consumer.commit_async(_commit_offsets(pending), callback=self._commit_answered)
        except Exception as exc:
            self._commit_answered(_commit_offsets(pending), exc)

    def _commit_answered(
        self, offsets: Mapping[TopicPartition, OffsetAndMetadata], answer: object
    ) -> None:
        """Kafka's answer to a commit (kafka-python calls this on the sink thread, in a poll)."""
        answered = {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
        in_flight, confirmed = self._commits_in_flight, self._commits_confirmed
        for key, offset in answered.items():
            if in_flight.get(key, offset + 1) <= offset:
                del in_flight[key]
        if isinstance(answer, Exception):
            # The rows are stored: a partition that stays assigned is not fetched again (its
            # fetch position survives a rebalance), so its offsets must be committed later
            # (unless a later commit of that partition landed already).
            _log.warning("offset commit failed; retried later", error=str(answer))
            for key, offset in answered.items():
                if offset > confirmed.get(key, -1):
                    self._uncommitted[key] = max(offset, self._uncommitted.get(key, 0))
            self._commit_retry_at = time.monotonic() + _BACKOFF_MAX_S / 10
            return
        for key, offset in answered.items():
            confirmed[key] = max(offset, confirmed.get(key, -1))
            if self._uncommitted.get(key, offset + 1) <= offset:
                del self._uncommitted[key]
        self.stats.commits += 1
        self._metrics.progress()

    def _settle_commits(self, consumer: KafkaConsumer) -> None:
        """Before leaving: commit again, and wait for, the offsets of commits not answered yet and
        of those that failed (closing the consumer does not wait for commits in flight)."""
        unsettled = dict(self._commits_in_flight)
        for key, offset in self._uncommitted.items():
            unsettled[key] = max(offset, unsettled.get(key, 0))
        assigned = _assigned(consumer)
        offsets = {key: offset for key, offset in unsettled.items() if key in assigned}
        if not offsets:
            return
        try:
            consumer.commit(_commit_offsets(offsets))
        except Exception as exc:
            _log.warning("offset commit failed at stop", error=str(exc))
            return
        self._commit_answered(_commit_offsets(offsets), None)

    def _unstick_rebalance(self, consumer: KafkaConsumer) -> None:
        """A net under `_Listener`'s workaround of kafka-python 3.0.12's join left incomplete: when
        the partitions revoked at a rebalance's start have not been followed by an assignment
        within two session timeouts, ask for a fresh join. While a join is in flight the listener
        has already asked (the join is awaited, not sent twice), so this acts only on a join that
        ended without reporting its assignment."""
        with self._lock:
            since = self._rebalancing_since
            if (
                since is None
                or time.monotonic() - since <= 2 * self._kafka.session_timeout_ms / 1000
            ):
                return
            self._rebalancing_since = time.monotonic()
        _log.warning(
            "rebalance not completing; joining the group again",
            waited_s=round(time.monotonic() - since, 1),
        )
        consumer._coordinator.request_rejoin()
        self.stats.rejoins += 1
        self._metrics.rejoin()

    def _retry_commit(self, consumer: KafkaConsumer) -> None:
        """While no batch is being inserted, retry a failed commit now and then."""
        idle = self._inflight is None
        if self._uncommitted and idle and time.monotonic() >= self._commit_retry_at:
            self._commit(consumer, {})

    def _dlq(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = create_producer(
                self._kafka, client_id=f"{self._kafka.client_id}-reporting-dlq"
            )
        return self._producer

    def _retry(self, op: str, action: Callable[[], _T]) -> _T:
        """Run `action` until it succeeds, backing off; raise _Stopped if a stop is requested."""
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                result = action()
            except Exception as exc:
                self._failed(op, exc)
                if self._stop.wait(delay):
                    raise _Stopped(op) from exc
                delay = min(delay * 2, _BACKOFF_MAX_S)
                continue
            if self._failing:
                _log.info("recovered", op=op)
            self._failing = False
            return result

    def _failed(self, op: str, exc: Exception) -> None:
        self._failing = True
        self.stats.retries += 1
        self._metrics.retry(op)
        _log.warning(
            "operation failed, retrying", op=op, error=str(exc), error_type=type(exc).__name__
        )

    def _stats_fields(self) -> dict[str, Any]:
        return {
            "consumed": self.stats.consumed,
            "inserted": dict(self.stats.inserted),
            "dead_letters": self.stats.dead_letters,
        }


def _assigned(consumer: KafkaConsumer) -> set[PartitionKey]:
    return {(tp.topic, tp.partition) for tp in consumer.assignment()}


def _commit_offsets(
    next_offsets: Mapping[PartitionKey, int],
) -> dict[TopicPartition, OffsetAndMetadata]:
    return {
        TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
        for (topic, partition), offset in next_offsets.items()
    }


def _raw_record(record: ConsumerRecord) -> RawRecord:
    """A kafka-python record as the projection reads it; of the headers only `schema` (all that
    `decode` checks; a dead letter keeps no headers)."""
    schema = None
    for name, value in record.headers or ():
        if name == "schema":
            schema = value
    return record.topic, record.partition, record.offset, record.key, record.value, schema
