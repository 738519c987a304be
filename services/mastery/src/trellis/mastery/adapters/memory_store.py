"""`LearnerStore` in a dict: for unit tests and tools; owns every key."""

from __future__ import annotations

from datetime import datetime

from trellis.mastery.domain import LearnerState


class InMemoryLearnerStore:
    def __init__(self) -> None:
        self.states: dict[bytes, LearnerState] = {}
        self.erased: dict[bytes, datetime] = {}
        self.writes = 0

    def get(self, key: bytes) -> LearnerState | None:
        return self.states.get(key)

    def put(self, key: bytes, state: LearnerState) -> None:
        self.states[key] = state
        self.writes += 1

    def owns(self, key: bytes) -> bool:
        return True

    def owns_all(self) -> bool:
        return True

    def erase(self, key: bytes, erased_at: datetime) -> None:
        self.states.pop(key, None)
        self.erased[key] = erased_at
        self.writes += 1

    def erased_at(self, key: bytes) -> datetime | None:
        return self.erased.get(key)
