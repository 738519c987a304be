"""The reporting store port: what the sink writes and the queries read (STYLE.md §4, Ralph's shape).

Implementations: `chdb.ChdbStore` (embedded, one process owns it) and `clickhouse.ClickHouseStore`
(a server by URL); both pass `tests/contract/reporting/test_store.py`. Every query is scoped to
one tenant. Methods block: async callers run them in a thread pool.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "HeatmapCell",
    "PartitionKey",
    "ReportingStore",
    "SkillProgress",
    "StoreError",
    "StoreStatus",
]

# (topic, partition)
PartitionKey = tuple[str, int]


class StoreStatus(enum.Enum):
    """OK: reachable and migrated; AWAY: cannot be reached; ERROR: reachable but not usable."""

    OK = "ok"
    AWAY = "away"
    ERROR = "error"


class StoreError(Exception):
    """The store failed; the operation may succeed when retried."""


@dataclass(frozen=True, slots=True)
class SkillProgress:
    skill_id: str
    p_mastered: float
    level: int
    attempts: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class HeatmapCell:
    learner_id: str
    skill_id: str
    p_mastered: float
    level: int


class ReportingStore(ABC):
    """A ClickHouse-shaped store of the reporting tables."""

    @abstractmethod
    def status(self) -> StoreStatus:
        """Readiness of the store; never raises."""

    @abstractmethod
    def migrate(self) -> list[int]:
        """Apply the migrations not applied yet; returns their versions (empty: up to date)."""

    @abstractmethod
    def positions(self, table: str) -> dict[PartitionKey, int]:
        """The highest Kafka offset stored in `table`, per (topic, partition)."""

    @abstractmethod
    def insert(self, table: str, rows: Sequence[Mapping[str, Any]], token: str) -> None:
        """Insert rows in one block; a repeat of the same `token` is dropped by the store."""

    @abstractmethod
    def learner_progress(
        self,
        tenant_id: str,
        learner_id: str,
        *,
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
    ) -> list[SkillProgress]:
        """Latest mastery per skill of one (pseudonymous) learner, by skill id.

        Across all the learner's classes, or only the evidence from `classes` / `schools` when
        given (a caller's scope: a teacher sees what was learned in their classes).
        """

    @abstractmethod
    def class_heatmap(
        self,
        tenant_id: str,
        class_id: str,
        limit: int,
        after: tuple[str, str] | None = None,
        *,
        schools: Sequence[str] | None = None,
    ) -> list[HeatmapCell]:
        """Latest mastery per learner x skill of a class, by (learner, skill), after a cursor;
        only rows from `schools` when given."""

    @abstractmethod
    def row_counts(self, tenant_id: str) -> dict[str, int]:
        """Rows of one tenant per table (mastery_latest: distinct class x learner x skill cells)."""

    @abstractmethod
    def erased_learners(self) -> set[tuple[str, str]]:
        """Every (tenant, pseudonymous learner) erased so far."""

    @abstractmethod
    def erase_learner(self, tenant_id: str, learner_id: str) -> None:
        """Delete every row of one learner from every table, rollups included; idempotent."""

    @abstractmethod
    def close(self) -> None:
        """Release the connections; the store cannot be used afterwards."""
