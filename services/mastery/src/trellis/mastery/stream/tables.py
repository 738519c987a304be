"""The mastery table: one `LearnerState` per `tenant/learner` key, in RocksDB with a changelog.

The table is co-partitioned with the activity topic: Faust writes each change to the changelog
partition of the event being processed, so a learner's state sits with their events and moves
with them on a rebalance. Values are immutable states; every change assigns a new value, so the
changelog sees it (mutating a stored value in place would not reach the changelog).
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TP, TableT
from kafka.partitioner.default import murmur2

from trellis.common.settings import Settings
from trellis.mastery.adapters.state_codec import decode_state, encode_state
from trellis.mastery.domain import LearnerState

LEARNERS = "learners"
TABLE_NAMES = [LEARNERS]


@dataclass(frozen=True)
class Tables:
    learners: TableT[bytes, bytes]


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
    return Tables(learners=learners)


class TableLearnerStore:
    """`LearnerStore` on the Faust table. Writes only from inside the agent (Faust needs the
    current event to pick the changelog partition); reads from anywhere in the worker."""

    def __init__(
        self, app: faust.App, table: TableT[bytes, bytes], source_topic: str, partitions: int
    ) -> None:
        self._app = app
        self._table = table
        self._source_topic = source_topic
        self._partitions = partitions

    def get(self, key: bytes) -> LearnerState | None:
        stored = self._table.get(key)
        return None if stored is None else decode_state(stored)

    def put(self, key: bytes, state: LearnerState) -> None:
        self._table[key] = encode_state(state)

    def owns(self, key: bytes) -> bool:
        """False also while a rebalance or table recovery is under way: the state may be stale."""
        if self._app.rebalancing or self._app.in_recovery:
            return False
        # The producers (kafka-python) partition by murmur2 of the key, as the Java client does.
        partition = (murmur2(key) & 0x7FFFFFFF) % self._partitions
        actives: set[TP] = self._app.assignor.assigned_actives()
        return TP(self._source_topic, partition) in actives
