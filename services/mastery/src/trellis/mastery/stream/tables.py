"""The mastery tables: one `LearnerState` per `tenant/learner` key, in RocksDB with a changelog;
and the erased markers (key -> time of the learner's erasure, ISO 8601), likewise.

Erasure deletes the learner's entry (Faust writes a tombstone to the changelog, which compaction
then clears of the learner's values) and writes a marker, which holds no learning data.

The table is co-partitioned with the activity topic: Faust writes each change to the changelog
partition of the event being processed, so a learner's state sits with their events and moves
with them on a rebalance. Values are immutable states; every change assigns a new value, so the
changelog sees it (mutating a stored value in place would not reach the changelog).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import faust
from faust.types import TP, StoreT, TableT

from trellis.common.settings import Settings
from trellis.mastery.adapters.partitioning import partition_of
from trellis.mastery.adapters.state_codec import EncodedState, decode, encode
from trellis.mastery.domain import LearnerState
from trellis.mastery.stream.sending import Outgoing, kafka_producer, send_all

#: Decoded states kept per worker, keyed like the table (forgotten on every rebalance), each
#: with the encoded parts that its learner's next write reuses.
DECODED_CACHE_SIZE = 10_000

LEARNERS = "learners"
ERASED = "erased"
TABLE_NAMES = [LEARNERS, ERASED]


@dataclass(frozen=True)
class Tables:
    learners: TableT[bytes, bytes]
    erased: TableT[bytes, bytes]


def define_tables(app: faust.App, settings: Settings) -> Tables:
    # Serializers follow key_type/value_type (bytes -> raw); a `schema=` would not reach the store.
    learners: TableT[bytes, bytes] = app.Table(
        LEARNERS,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.kafka.topics.partitions,
        help="Mastery state per learner, keyed tenant/learner.",
    )
    erased: TableT[bytes, bytes] = app.Table(
        ERASED,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.kafka.topics.partitions,
        help="Erased learners: tenant/learner -> time of the erasure request (ISO 8601).",
    )
    return Tables(learners=learners, erased=erased)


class TableLearnerStore:
    """`LearnerStore` on the Faust table. Writes only from inside the agent (Faust needs the
    current event to pick the changelog partition); reads from anywhere in the worker."""

    def __init__(
        self,
        app: faust.App,
        table: TableT[bytes, bytes],
        source_topic: str,
        partitions: int,
        erased: TableT[bytes, bytes] | None = None,
    ) -> None:
        self._app = app
        self._table = table
        self._erased = erased
        self._decoded: dict[bytes, EncodedState] = {}
        # States a batch has shown (reads get them, the applied offsets count them) but not yet
        # written to the local store; None: an erasure, which the cache cannot hold (a read
        # would get the store's pre-erasure state under offsets past the erasure). Unlike the
        # cache, never evicted nor dropped at a rebalance.
        self._unstored: dict[bytes, EncodedState | None] = {}
        self._source_topic = source_topic
        self._partitions = partitions

    def get(self, key: bytes) -> LearnerState | None:
        if key in self._unstored:
            shown = self._unstored[key]
            return None if shown is None else shown.state
        cached = self._decoded.get(key)
        if cached is not None:
            return cached.state
        stored = self._table.get(key)
        if stored is None:
            return None
        decoded = decode(stored)
        self._remember(key, decoded)
        return decoded.state

    def put(self, key: bytes, state: LearnerState) -> None:
        encoded = encode(state, self._decoded.get(key))
        self._table[key] = encoded.data
        self._remember(key, encoded)

    async def write_stored_first(
        self,
        states: Mapping[bytes, LearnerState | None],
        erased: Mapping[bytes, datetime],
        acting_for: Callable[[bytes], AbstractContextManager[object]],
    ) -> None:
        """Write a batch's changes: for each key of `states`, its erasure first if `erased`
        has it (a tombstone and the erased marker), then its new state unless None.

        In this order: the changelog records, awaited until the broker stored them; the local
        store; the persisted changelog offsets. (Faust's own `table[key] = value` writes the
        local store first and its changelog record later: a kill -9 between the two left a
        state on disk that the changelog never got, and a restart on that disk took the
        redelivered events for duplicates.) A kill before the local write is repaired by table
        recovery, which replays the changelog from the persisted offset on. Each key is written
        inside `acting_for(key)`: the partition comes from Faust's current event."""
        changes: list[tuple[TableT[bytes, bytes], bytes, bytes | None]] = []
        # Each new state encoded against the learner's previous one (still the cached one).
        encoded = {
            key: None if state is None else encode(state, self._decoded.get(key))
            for key, state in states.items()
        }
        for key, state in encoded.items():
            at = erased.get(key)
            if at is not None:
                if self._erased is None:
                    raise RuntimeError("this store has no erased-marker table")
                changes += [(self._table, key, None), (self._erased, key, at.isoformat().encode())]
            if state is not None:
                changes.append((self._table, key, state.data))
        if not changes:
            return
        # Reads see the new states at once (their outputs are stored; after a crash the same
        # events give them again), not one changelog round trip after the outputs.
        self._show(encoded, acting_for)
        records: list[Outgoing] = []
        for table, key, value in changes:
            with acting_for(key):
                partition = table.partition_for_key(key)
            records.append((table.changelog_topic.get_topic_name(), partition, key, value, None))
        stored = await send_all(kafka_producer(self._app), records)
        for table, key, value in changes:
            # The sensors heard of the learners' states in `_show`; of the markers only here.
            told = table is self._table
            with acting_for(key):
                if value is not None:
                    table.data[key] = value
                    if not told:
                        self._app.sensors.on_table_set(table, key, value)
                elif key in table.data:
                    del table.data[key]
                    if not told:
                        self._app.sensors.on_table_del(table, key)
        # Stored now; and cached again, without telling the sensors twice: a read in between
        # may have cached the disk's.
        for key, state in encoded.items():
            self._unstored.pop(key, None)
            if state is None:
                self._decoded.pop(key, None)
            else:
                self._remember(key, state)
        by_changelog = {table.changelog_topic.get_topic_name(): table for table, _, _ in changes}
        for tp, offset in stored.items():
            store = cast(StoreT[bytes, bytes], by_changelog[tp.topic].data)
            store.set_persisted_offset(TP(tp.topic, tp.partition), offset)

    def _show(
        self,
        states: Mapping[bytes, EncodedState | None],
        acting_for: Callable[[bytes], AbstractContextManager[object]],
    ) -> None:
        """Make `states` what reads get, and tell the sensors (the read API's applied offsets
        follow table writes) with the key's event as the current one."""
        for key, state in states.items():
            self._decoded.pop(key, None)
            self._unstored[key] = state
            with acting_for(key):
                if state is not None:
                    self._remember(key, state)
                    self._app.sensors.on_table_set(self._table, key, state.state)
                else:
                    self._app.sensors.on_table_del(self._table, key)

    def forget_decoded(self, *_: object, **__: object) -> None:
        """Drop every decoded state (a Faust signal handler: on each rebalance, before table
        recovery or standby updates can change the table of a partition that becomes ours)."""
        self._decoded.clear()

    def _remember(self, key: bytes, state: EncodedState) -> None:
        # Decoding is most of the cost of a read, reading RocksDB much of the rest. Between two
        # rebalances only this store writes the active partitions, so the cache is their truth.
        self._decoded.pop(key, None)
        self._decoded[key] = state
        if len(self._decoded) > DECODED_CACHE_SIZE:
            del self._decoded[next(iter(self._decoded))]  # the least recently stored

    def erase(self, key: bytes, erased_at: datetime) -> None:
        if self._erased is None:
            raise RuntimeError("this store has no erased-marker table")
        self._decoded.pop(key, None)
        if self._table.get(key) is not None:
            del self._table[key]
        self._erased[key] = erased_at.isoformat().encode()

    def erased_at(self, key: bytes) -> datetime | None:
        stored = None if self._erased is None else self._erased.get(key)
        return None if stored is None else datetime.fromisoformat(stored.decode())

    def owns_all(self) -> bool:
        """Every partition of the activity topic is active here and no rebalance is under way."""
        if self._app.rebalancing or self._app.in_recovery:
            return False
        actives: set[TP] = self._app.assignor.assigned_actives()
        return all(TP(self._source_topic, p) in actives for p in range(self._partitions))

    def owns(self, key: bytes) -> bool:
        """False also while a rebalance or table recovery is under way: the state may be stale."""
        if self._app.rebalancing or self._app.in_recovery:
            return False
        partition = partition_of(key, self._partitions)
        actives: set[TP] = self._app.assignor.assigned_actives()
        return TP(self._source_topic, partition) in actives
