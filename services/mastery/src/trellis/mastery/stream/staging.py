"""Writes of one micro-batch, held back until its outputs are stored.

The agent applies a batch's events through a `MasteryService` over `StagedWrites`: reads go to
the staged state of the key if the batch changed it, else to the table; writes and erasures stay
here. Once the broker has acknowledged every output of the batch, `flush` writes each changed
learner once (one RocksDB write and one changelog record per learner per batch instead of one per
event). A crash before the flush leaves the table as it was: the redelivered events are applied
again and give the same outputs with the same ids; a crash after it finds them in the dedup
window, and their outputs already on the topic.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime

from trellis.mastery.domain import LearnerState
from trellis.mastery.stream.tables import TableLearnerStore


class StagedWrites:
    """A `LearnerStore` that reads through to `store` and keeps its writes until `flush`."""

    def __init__(self, store: TableLearnerStore) -> None:
        self._store = store
        # Per changed key: the state to write (None: none, the key was erased and not rewritten).
        self._states: dict[bytes, LearnerState | None] = {}
        self._erased: dict[bytes, datetime] = {}

    def get(self, key: bytes) -> LearnerState | None:
        if key in self._states:
            return self._states[key]
        return self._store.get(key)

    def put(self, key: bytes, state: LearnerState) -> None:
        self._states[key] = state

    def erase(self, key: bytes, erased_at: datetime) -> None:
        self._states[key] = None
        self._erased[key] = erased_at

    def erased_at(self, key: bytes) -> datetime | None:
        if key in self._erased:
            return self._erased[key]
        return self._store.erased_at(key)

    def owns(self, key: bytes) -> bool:
        return self._store.owns(key)

    def owns_all(self) -> bool:
        return self._store.owns_all()

    async def flush(self, acting_for: Callable[[bytes], AbstractContextManager[object]]) -> None:
        """Write every change to the table (changelog records stored before the local store,
        see `TableLearnerStore.write_stored_first`), each key inside `acting_for(key)` (the
        table needs an event of the key's partition as the current one); then start the next
        batch."""
        await self._store.write_stored_first(self._states, self._erased, acting_for)
        self._states.clear()
        self._erased.clear()
