"""The reporting store port: what the sink writes and the queries read (STYLE.md §4, Ralph's shape).

Implementations: `chdb.ChdbStore` (embedded, one process owns it) and `clickhouse.ClickHouseStore`
(a server by URL); both pass `tests/contract/reporting/test_store.py`. Every query is scoped to
one tenant. Methods block: async callers run them in a thread pool.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from trellis.reporting.rows import Row

__all__ = [
    "EngagementDay",
    "ErrorCount",
    "GoalRow",
    "GrowthRow",
    "HeatmapCell",
    "HeatmapRows",
    "PartitionKey",
    "ReadyLearner",
    "ReportingStore",
    "RollupRows",
    "SkillGap",
    "SkillProgress",
    "StoreError",
    "StoreStatus",
    "SupportReason",
    "Target",
    "TimelineEntry",
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


@dataclass(frozen=True, slots=True)
class HeatmapRows:
    """A page of a class heatmap's cells and, with the first page only, the learners of the class
    (every learner it enrols, with or without cells, by id)."""

    cells: list[HeatmapCell]
    learner_ids: list[str]


@dataclass(frozen=True, slots=True)
class Target:
    """What a report is about: a class, or a school (exactly one of them), within a tenant.

    Every class and school report covers the target's learners: those the roster enrols now
    (learner enrollments, not tombstoned) in the class, or in a class the roster places in the
    school, within the caller's scope; a learner who left drops out though their rows stay.
    Their figures come only from rows recorded in the target. When the roster enrols no one
    there, the learners with rows there (rosters lag activity, or are not sent at all)."""

    tenant_id: str
    class_id: str = ""
    school_id: str = ""


@dataclass(frozen=True, slots=True)
class SupportReason:
    learner_id: str
    reason: str  # low_mastery | struggling | low_engagement
    skill_id: str  # empty for low_engagement
    value: float  # p_mastered, attempts, or events in the window
    detail: str  # struggling: many_attempts | repeated_error[:tag]


@dataclass(frozen=True, slots=True)
class ReadyLearner:
    learner_id: str
    skills_started: int
    skills_mastered: int


@dataclass(frozen=True, slots=True)
class SkillGap:
    skill_id: str
    learners: int
    below: int  # under the low-mastery threshold
    mastered: int
    mean_mastery: float


@dataclass(frozen=True, slots=True)
class EngagementDay:
    learner_id: str
    day: date
    events: int
    attempts: int
    correct: int
    attempt_seconds: float
    resources: int
    resource_seconds: float


@dataclass(frozen=True, slots=True)
class ErrorCount:
    skill_id: str
    error_tag: str
    attempts: int
    learners: int


@dataclass(frozen=True, slots=True)
class GrowthRow:
    learner_id: str
    skill_id: str
    p_start: float
    p_end: float
    updates: int


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    occurred_at: datetime
    event_id: str
    kind: str
    skill_ids: list[str]
    activity_id: str
    score: float | None  # attempts: score; mastery events: p
    detail: str  # error tag, struggling reason, ...
    duration_seconds: float


@dataclass(frozen=True, slots=True)
class GoalRow:
    goal_id: str
    skill_id: str
    target_date: str
    set_at: datetime


@dataclass(frozen=True, slots=True)
class ReflectionRow:
    reflection_id: str
    skill_id: str
    confidence: float | None
    submitted_at: datetime


@dataclass(frozen=True, slots=True)
class LearnerGoalsRow:
    """Goals (latest version of each, with the goal skill's mastery and level) and reflections."""

    learner_id: str
    goals: list[tuple[GoalRow, float, int]]
    reflections: list[ReflectionRow]


@dataclass(frozen=True, slots=True)
class RollupRows:
    """Unsuppressed groups (key, learners, mean mastery, mastered share) and the total."""

    groups: list[tuple[str, int, float, float]]
    total: tuple[int, float, float]


class ReportingStore(ABC):
    """A ClickHouse-shaped store of the reporting tables."""

    @abstractmethod
    def status(self) -> StoreStatus:
        """Readiness of the store; never raises."""

    @abstractmethod
    def migrate(self) -> list[int]:
        """Apply the migrations not applied yet; returns their versions (empty: up to date)."""

    @abstractmethod
    def positions(self, tables: Sequence[str]) -> dict[str, dict[PartitionKey, int]]:
        """Per table, the highest Kafka offset stored, per (topic, partition); every table named
        is in the answer (empty if it holds no rows)."""

    @abstractmethod
    def insert(self, table: str, rows: Sequence[Row], token: str) -> None:
        """Insert rows of one table (its row type of `trellis.reporting.rows`) in one block; a
        repeat of the same `token` is dropped by the store."""

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
    ) -> HeatmapRows:
        """Latest mastery per learner x skill of a class, by (learner, skill), after a cursor,
        for the class's learners (`Target`); only rows from `schools` when given. The first page
        (no cursor) also lists those learners."""

    @abstractmethod
    def row_counts(self, tenant_id: str) -> dict[str, int]:
        """Rows of one tenant per table (mastery_latest: distinct class x learner x skill cells)."""

    @abstractmethod
    def erased_learners(self) -> set[tuple[str, str]]:
        """Every (tenant, pseudonymous learner) erased so far."""

    @abstractmethod
    def erase_learners(self, tenant_id: str, learner_ids: Sequence[str]) -> None:
        """Delete every row of these learners from every table, rollups included (one
        lightweight DELETE per table for all of them); idempotent."""

    # --- reports (implemented by the ClickHouse stores; fakes need not) ---
    # Each runs within `timeout_s` (None: no limit) and pages by the cursor it returns rows in.

    def learner_enrolled(
        self,
        tenant_id: str,
        learner_id: str,
        *,
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> bool:
        """Whether the roster enrols this (pseudonymous) learner, as a learner, in one of
        `classes` and/or in a class the roster places in one of `schools` (None: any)."""
        raise NotImplementedError

    def needs_support(
        self,
        target: Target,
        *,
        since: datetime,
        until: datetime,
        low_p: float,
        min_attempts: int,
        min_events: int,
        limit: int,
        after: str = "",
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[SupportReason]:
        """Reasons of the first `limit` of the target's learners (`Target`; by id, after
        `after`) who need support; one without any activity is low on engagement."""
        raise NotImplementedError

    def ready_to_accelerate(
        self,
        target: Target,
        *,
        since: datetime,
        until: datetime,
        mastered_share: float,
        min_skills: int,
        limit: int,
        after: str = "",
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[ReadyLearner]:
        """The target's learners (`Target`; by id, never by score) with most started skills
        mastered, not struggling."""
        raise NotImplementedError

    def skill_gaps(
        self,
        target: Target,
        *,
        low_p: float,
        limit: int,
        after: str = "",
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[SkillGap]:
        """Per skill, over the target's learners (`Target`) with evidence for it."""
        raise NotImplementedError

    def engagement(
        self,
        target: Target,
        *,
        since: date,
        until: date,
        learner_id: str = "",
        limit: int,
        after: tuple[str, date] | None = None,
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[EngagementDay]:
        """Per learner of the target (`Target`) and day in [since, until), by (learner, day)."""
        raise NotImplementedError

    def error_breakdown(
        self,
        target: Target,
        *,
        since: datetime,
        until: datetime,
        skill_id: str = "",
        limit: int,
        after: tuple[str, str] | None = None,
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[ErrorCount]:
        """Per skill and error tag, attempts of the target's learners (`Target`)."""
        raise NotImplementedError

    def growth(
        self,
        target: Target,
        *,
        since: datetime,
        until: datetime,
        limit: int,
        after: tuple[str, str] | None = None,
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[GrowthRow]:
        """Per learner of the target (`Target`) and skill updated in [since, until)."""
        raise NotImplementedError

    def timeline(
        self,
        tenant_id: str,
        learner_id: str,
        *,
        since: datetime,
        until: datetime,
        limit: int,
        after: tuple[datetime, str] | None = None,
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[TimelineEntry]:
        raise NotImplementedError

    def learner_goals(
        self, tenant_id: str, learner_id: str, *, timeout_s: float | None = None
    ) -> list[GoalRow]:
        raise NotImplementedError

    def class_goals(
        self,
        target: Target,
        *,
        limit: int,
        after: str = "",
        classes: Sequence[str] | None = None,
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> list[LearnerGoalsRow]:
        """Goals and reflections of the first `limit` of the target's learners (`Target`, by
        id); the goal skill's mastery is the learner's newest in the caller's scope."""
        raise NotImplementedError

    def rollup(
        self,
        tenant_id: str,
        dimension: str,
        *,
        skill_id: str = "",
        schools: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> RollupRows:
        """Groups of active roster learners by school, grade or subgroup (unsuppressed)."""
        raise NotImplementedError

    @abstractmethod
    def close(self) -> None:
        """Release the connections; the store cannot be used afterwards."""
