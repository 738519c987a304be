"""The sink's projection of a batch: records -> rows -> the inserts the tables lack, erasures.

Runs where the store is: in the process that owns chDB when the sink consumes in a decoding process
of its own (`trellis.reporting.sink_process`), so that decoding and mapping (about 6 us per record)
run beside the decoding process's polling instead of after it on one GIL; on the sink's insert
thread otherwise. The sink hands it each batch's records as they were read and commits their
offsets only after it returned (`trellis.reporting.sink` has the guarantees).

Why no record is ever stored twice: every row carries its Kafka position, and the projector keeps,
per table, the highest offset stored for each partition (read from the table after each partition
assignment, then advanced after each insert). Rows at or below it are dropped before the insert,
so a crash between insert and commit, or a replay after the group's offsets were reset, re-reads
records but inserts none of them again. A batch retried after an ambiguous failure (the store may
have stored it) is the same block with the same token, which the store drops.

Erasure: a `LearnerErasureRequested` (activity) or `LearnerErased` (mastery) record is stored in
`erased_learners`, then every table is purged of that learner with lightweight DELETEs (rollups
included), before the sink commits. The projector keeps the erased set (read from the table with
the positions) and drops every row of an erased learner before inserting: a replay of the log, or
a late mastery event, never brings them back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple, Protocol

from trellis.common.codec import decode, decode_envelope
from trellis.common.kafka import dead_letter
from trellis.common.pb.events.v1 import envelope_pb2, roster_pb2
from trellis.common.settings import KafkaSettings
from trellis.reporting.rows import (
    ACTIVITY,
    ERASED_LEARNERS,
    MASTERY_EVENTS,
    MASTERY_HISTORY,
    MASTERY_LATEST,
    ROSTER_CLASSES,
    ROSTER_ENROLLMENTS,
    ROSTER_LEARNERS,
    ROSTER_SCHOOLS,
    Position,
    Row,
    Stream,
    roster_rows,
    rows_for,
)
from trellis.reporting.store.base import PartitionKey

__all__ = [
    "CONSUMER_NAME",
    "BatchProjector",
    "Projector",
    "RawRecord",
    "SinkStore",
    "Totals",
    "insert_token",
    "stream_topics",
]

CONSUMER_NAME = "trellis-reporting"
# Erasures first (they filter the rest); history before latest: a reader never sees a latest
# value whose history row is missing.
TABLE_ORDER = (
    ERASED_LEARNERS,
    MASTERY_HISTORY,
    MASTERY_LATEST,
    MASTERY_EVENTS,
    ACTIVITY,
    ROSTER_SCHOOLS,
    ROSTER_CLASSES,
    ROSTER_ENROLLMENTS,
    ROSTER_LEARNERS,
)
# (tenant, learner) of a row that has a learner (attrgetter: one C call per row).
_tenant_learner = attrgetter("tenant_id", "learner_id")


# A consumed record, reduced to what the projection reads: (topic, partition, offset, key, value,
# its `schema` header). Plain tuples of plain values: a batch crosses to the owner as six columns
# of them, which pickle in a few ms and leave the owner no per-record containers for its garbage
# collector to walk (the headers' lists and tuples did: a tenth of its time).
RawRecord = tuple[str, int, int, bytes | None, bytes | None, bytes | None]


class _Letter(NamedTuple):
    """A record as `dead_letter` reads it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    schema: bytes | None


@dataclass
class Totals:
    """What a projector did since it was made (the sink's counters take them as they are)."""

    inserted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    already_stored: int = 0
    erased_rows_dropped: int = 0
    erasures: int = 0
    not_projected: int = 0


class SinkStore(Protocol):
    """What the projection needs of a store (a `ReportingStore`)."""

    def positions(self, tables: Sequence[str]) -> dict[str, dict[PartitionKey, int]]: ...

    def erased_learners(self) -> set[tuple[str, str]]: ...

    def erase_learners(self, tenant_id: str, learner_ids: Sequence[str]) -> None: ...

    def insert(self, table: str, rows: Sequence[Row], token: str) -> None: ...


class BatchProjector(Protocol):
    """A `Projector`, or one in another process seen from the sink."""

    def project(
        self, records: Iterable[RawRecord], reload: bool
    ) -> tuple[list[envelope_pb2.DeadLetter], Totals]: ...


def stream_topics(kafka: KafkaSettings) -> dict[str, Stream]:
    """Topic name -> the stream it carries, for the topics the sink consumes."""
    return {kafka.topics.name(stream): stream for stream in ("mastery", "activity", "roster")}


def insert_token(table: str, ranges: Mapping[PartitionKey, tuple[int, int]]) -> str:
    """Deduplication token of one insert: the table and the offset range of each partition."""
    parts = [
        f"{topic}:{partition}:{low}-{high}"
        for (topic, partition), (low, high) in sorted(ranges.items())
    ]
    return f"{table}/{','.join(parts)}"


class Projector:
    """Projects batches into one store; keeps its stored positions and erased learners."""

    def __init__(self, store: SinkStore, streams: Mapping[str, Stream]) -> None:
        self._store = store
        self._streams = streams
        # Highest offset stored per table and partition; read again when asked (`reload`), until
        # a read succeeded.
        self._positions: dict[str, dict[PartitionKey, int]] = {}
        self._stale = True
        # (tenant, learner) pairs erased: their rows are never inserted again.
        self._erased: set[tuple[str, str]] = set()
        self.totals = Totals()

    def project(
        self, records: Iterable[RawRecord], reload: bool
    ) -> tuple[list[envelope_pb2.DeadLetter], Totals]:
        """Insert the rows of `records` that the tables lack and apply their erasures; returns
        the dead letters (undecodable records, or not valid rows) and the totals so far.

        `reload`: partitions were assigned since the last call; read the positions first."""
        if reload or self._stale:
            self._stale = True
            self.reload()
            self._stale = False
        rows: dict[str, list[Row]] = defaultdict(list)
        letters = []
        not_projected = 0
        for record in records:
            try:
                pairs = self._rows(record)
            except Exception as exc:  # anything undecodable is a dead letter, never a stop
                letters.append(dead_letter(_Letter(*record), str(exc), CONSUMER_NAME))
                continue
            if not pairs:
                not_projected += 1
            for table, row in pairs:
                rows[table].append(row)
        self.insert(rows)
        self.totals.not_projected += not_projected
        return letters, self.totals

    def reload(self) -> None:
        """Read the stored positions and erased learners (after partitions were assigned)."""
        self._positions = self._store.positions(TABLE_ORDER)
        self._erased = self._store.erased_learners()

    def _rows(self, record: RawRecord) -> list[tuple[str, Row]]:
        topic, partition, offset, key, value, schema = record
        headers = None if schema is None else [("schema", schema)]
        stream = self._streams[topic]
        position = Position(topic, partition, offset)
        if stream == "roster":
            # A compacted topic: a record without a value is a tombstone.
            roster = None if value is None else decode(roster_pb2.RosterRecord, value, headers)
            return roster_rows(key, roster, position)
        return rows_for(stream, decode_envelope(value, headers), position)

    def insert(self, rows: Mapping[str, Sequence[Row]]) -> None:
        """Insert what the tables do not hold yet; positions advance per successful insert."""
        totals = self.totals
        # Erasures of this batch apply to all of it, earlier offsets included.
        erasures = {_tenant_learner(r) for r in rows.get(ERASED_LEARNERS, ())}
        erased = self._erased | erasures
        for table in TABLE_ORDER:
            stored = self._positions.setdefault(table, {})
            candidates = rows.get(table, ())
            if table != ERASED_LEARNERS and erased and "learner_id" in _fields(candidates):
                kept = [r for r in candidates if _tenant_learner(r) not in erased]
                totals.erased_rows_dropped += len(candidates) - len(kept)
                candidates = kept
            fresh, ranges = _new_rows(candidates, stored)
            totals.already_stored += len(rows.get(table, ())) - len(fresh)
            if not fresh:
                continue
            self._store.insert(table, fresh, insert_token(table, ranges))
            for key, (_, high) in ranges.items():
                stored[key] = max(high, stored.get(key, -1))
            totals.inserted[table] += len(fresh)
            if table == ERASED_LEARNERS:
                self._erased |= {_tenant_learner(r) for r in fresh}
        # Every erasure read in this batch is applied, even one already recorded: a crash
        # between recording it and deleting leaves the batch uncommitted, so it is redone here.
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for tenant_id, learner_id in sorted(erasures):
            by_tenant[tenant_id].append(learner_id)
        for tenant_id, learner_ids in by_tenant.items():
            self._store.erase_learners(tenant_id, learner_ids)
            totals.erasures += len(learner_ids)


def _fields(rows: Sequence[Row]) -> tuple[str, ...]:
    """The columns of a table's rows (none if there are no rows)."""
    return rows[0]._fields if rows else ()


def _new_rows(
    rows: Iterable[Row], stored: Mapping[PartitionKey, int]
) -> tuple[list[Row], dict[PartitionKey, tuple[int, int]]]:
    """Rows above the stored position of their partition, each position once, and the offset
    range of each partition among them (one pass: it runs over every row of every batch).

    A partition's rows normally come in offset order, so a row above the highest fresh offset of
    its partition cannot repeat one: the set of offsets taken is built only for a partition whose
    offsets go back (records read twice, as around a rebalance)."""
    fresh: list[Row] = []
    # Per partition: [stored position, lowest, highest fresh offset (-1: none yet)].
    spans: dict[PartitionKey, list[int]] = {}
    taken: dict[PartitionKey, set[int]] = {}
    for row in rows:
        key = (row.source_topic, row.source_partition)
        offset = row.source_offset
        span = spans.get(key)
        if span is None:
            span = spans[key] = [stored.get(key, -1), -1, -1]
        if offset <= span[0]:
            continue
        offsets = taken.get(key)
        if offset > span[2]:
            if span[2] < 0:
                span[1] = offset
            span[2] = offset
        else:
            if offsets is None:
                offsets = taken[key] = {
                    r.source_offset for r in fresh if (r.source_topic, r.source_partition) == key
                }
            if offset in offsets:
                continue
            span[1] = min(span[1], offset)
        if offsets is not None:
            offsets.add(offset)
        fresh.append(row)
    ranges = {key: (low, high) for key, (_, low, high) in spans.items() if high >= 0}
    return fresh, ranges
