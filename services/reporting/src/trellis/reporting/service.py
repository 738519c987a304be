"""Reporting use cases: scope, pseudonymize, page, and run the blocking store queries off the loop.

The servicer authorizes and translates; here a caller's scope becomes query filters, SIS learner
ids become pseudonymous ids, and page tokens are made and checked. Store calls block (chDB has no
async client), so they run in a thread pool executor.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Generic, TypeVar

from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import ReportingSettings
from trellis.reporting.store.base import (
    EngagementDay,
    ErrorCount,
    GoalRow,
    GrowthRow,
    HeatmapCell,
    LearnerGoalsRow,
    ReadyLearner,
    ReportingStore,
    SkillGap,
    SkillProgress,
    SupportReason,
    Target,
    TimelineEntry,
)
from trellis.reporting.suppression import Group, suppress

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "DIMENSIONS",
    "MAX_PAGE_SIZE",
    "BadPageToken",
    "GoalProgress",
    "HeatmapPage",
    "LearnerNeeds",
    "LearnerOutOfScope",
    "LearnerProgress",
    "LearnerView",
    "Page",
    "ReportingService",
    "Rollup",
    "Scope",
    "decode_cursor",
    "decode_page_token",
    "encode_cursor",
    "encode_page_token",
    "recent_window",
]

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 5_000
_T = TypeVar("_T")
_R = TypeVar("_R")


class BadPageToken(ValueError):
    """A page token this service did not issue for this request."""


class LearnerOutOfScope(Exception):
    """A caller scoped to classes or schools named a learner the roster does not place there."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Which rows of a tenant a caller may read: None means no limit on that axis."""

    classes: Sequence[str] | None = None
    schools: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class LearnerProgress:
    learner_id: str  # pseudonymous
    skills: list[SkillProgress]


@dataclass(frozen=True, slots=True)
class HeatmapPage:
    cells: list[HeatmapCell]
    next_page_token: str
    learner_ids: list[str]  # the class's learners, by id: on the first page only


def encode_page_token(class_id: str, after: tuple[str, str]) -> str:
    """An opaque cursor: the last (learner, skill) served, bound to its class."""
    raw = json.dumps({"c": class_id, "l": after[0], "s": after[1]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(class_id: str, token: str) -> tuple[str, str] | None:
    """The cursor of a token (None for the first page); BadPageToken if it is not ours."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursor = json.loads(raw)
        found_class, learner, skill = cursor["c"], cursor["l"], cursor["s"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise BadPageToken("page_token is not valid") from exc
    if not all(isinstance(v, str) for v in (found_class, learner, skill)):
        raise BadPageToken("page_token is not valid")
    if found_class != class_id:
        raise BadPageToken("page_token belongs to another class")
    return learner, skill


class ReportingService:
    def __init__(
        self,
        store: ReportingStore,
        pseudonymizer: Pseudonymizer,
        executor: Executor,
        settings: ReportingSettings | None = None,
    ) -> None:
        self._store = store
        self._pseudonymizer = pseudonymizer
        self._executor = executor
        self.settings = settings or ReportingSettings()

    async def _run(self, call: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _check_enrolled(
        self, tenant_id: str, learner_id: str, scope: Scope, remaining_s: float | None
    ) -> None:
        """A scoped caller reaches a learner only through the roster (DESIGN.md §3a): a teacher
        through one of their classes, a caller scoped to schools through a class of its schools.
        Unscoped callers skip it; a learner principal is already limited to their own id."""
        if scope.classes is None and scope.schools is None:
            return
        # A teacher's schools never widen or narrow their classes (as in authorize_enrolled).
        schools = scope.schools if scope.classes is None else None
        enrolled = await self._run(
            lambda: self._store.learner_enrolled(
                tenant_id,
                learner_id,
                classes=scope.classes,
                schools=schools,
                timeout_s=self._timeout(remaining_s),
            )
        )
        if not enrolled:
            raise LearnerOutOfScope("learner outside the caller's classes or schools")

    async def learner_progress(
        self, tenant_id: str, sis_learner_id: str, scope: Scope, remaining_s: float | None = None
    ) -> LearnerProgress:
        """Latest mastery per skill; raises UnknownTenantKey if the tenant has no pseudonym key,
        LearnerOutOfScope if a scoped caller names a learner outside its scope."""
        learner_id = self._pseudonymizer.pseudonymize(tenant_id, sis_learner_id)
        await self._check_enrolled(tenant_id, learner_id, scope, remaining_s)
        skills = await self._run(
            lambda: self._store.learner_progress(
                tenant_id, learner_id, classes=scope.classes, schools=scope.schools
            )
        )
        return LearnerProgress(learner_id=learner_id, skills=skills)

    async def class_heatmap(
        self, tenant_id: str, class_id: str, page_size: int, page_token: str, scope: Scope
    ) -> HeatmapPage:
        after = decode_page_token(class_id, page_token)
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        # One row more than the page tells whether another page follows.
        rows = await self._run(
            lambda: self._store.class_heatmap(
                tenant_id, class_id, size + 1, after, schools=scope.schools
            )
        )
        cells = rows.cells
        if len(cells) <= size:
            return HeatmapPage(cells=cells, next_page_token="", learner_ids=rows.learner_ids)
        cells = cells[:size]
        last = cells[-1]
        return HeatmapPage(
            cells=cells,
            next_page_token=encode_page_token(class_id, (last.learner_id, last.skill_id)),
            learner_ids=rows.learner_ids,
        )

    async def store_stats(self, tenant_id: str) -> dict[str, int]:
        return await self._run(lambda: self._store.row_counts(tenant_id))

    def _timeout(self, remaining_s: float | None) -> float:
        """The query's time limit: the settings' limit, or the caller's deadline if sooner."""
        limit = self.settings.query_timeout_s
        return limit if remaining_s is None else max(0.0, min(limit, remaining_s))

    async def _page(
        self,
        report: _Report[_R],
        bound: str,
        size_requested: int,
        page_token: str,
        scope: Scope,
        remaining_s: float | None,
        fetch: Callable[[_Fetch], list[_R]],
    ) -> Page[_R]:
        """One page of a report: the cursor checked against the report and its request `bound`,
        `fetch` (the store query, run off the loop) given the page's limit, the cursor's values
        and the caller's filters, and the next cursor made from the last row served."""
        size = page_size(size_requested)
        after = decode_cursor(report.kind, bound, page_token, report.cursor_size)
        # One row more than the page tells whether another page follows.
        request = _Fetch(
            limit=size + 1,
            after=after,
            filters={
                "classes": scope.classes,
                "schools": scope.schools,
                "timeout_s": self._timeout(remaining_s),
            },
        )
        rows = await self._run(lambda: fetch(request))
        if len(rows) <= size:
            return Page(rows, "")
        rows = rows[:size]
        return Page(rows, encode_cursor(report.kind, bound, report.key(rows[-1])))

    async def needs_support(
        self,
        target: Target,
        as_of: datetime,
        size_requested: int,
        page_token: str,
        scope: Scope,
        remaining_s: float | None = None,
    ) -> Page[LearnerNeeds]:
        since, until = recent_window(as_of, self.settings.recent_days)
        cfg = self.settings

        def fetch(page: _Fetch) -> list[LearnerNeeds]:
            return _by_learner(
                self._store.needs_support(
                    target,
                    since=since,
                    until=until,
                    low_p=cfg.low_mastery_p,
                    min_attempts=cfg.low_mastery_min_attempts,
                    min_events=cfg.low_engagement_min_events,
                    limit=page.limit,
                    after=page.after_key,
                    **page.filters,
                )
            )

        return await self._page(
            _NEEDS, _target_bound(target), size_requested, page_token, scope, remaining_s, fetch
        )

    async def ready_to_accelerate(
        self,
        target: Target,
        as_of: datetime,
        size_requested: int,
        page_token: str,
        scope: Scope,
        remaining_s: float | None = None,
    ) -> Page[ReadyLearner]:
        since, until = recent_window(as_of, self.settings.recent_days)

        def fetch(page: _Fetch) -> list[ReadyLearner]:
            return self._store.ready_to_accelerate(
                target,
                since=since,
                until=until,
                mastered_share=self.settings.accelerate_mastered_share,
                min_skills=self.settings.accelerate_min_skills,
                limit=page.limit,
                after=page.after_key,
                **page.filters,
            )

        return await self._page(
            _READY, _target_bound(target), size_requested, page_token, scope, remaining_s, fetch
        )

    async def skill_gaps(
        self,
        target: Target,
        size_requested: int,
        page_token: str,
        scope: Scope,
        remaining_s: float | None = None,
    ) -> Page[SkillGap]:
        def fetch(page: _Fetch) -> list[SkillGap]:
            return self._store.skill_gaps(
                target,
                low_p=self.settings.low_mastery_p,
                limit=page.limit,
                after=page.after_key,
                **page.filters,
            )

        return await self._page(
            _GAPS, _target_bound(target), size_requested, page_token, scope, remaining_s, fetch
        )

    async def engagement(
        self,
        target: Target,
        since: date,
        until: date,
        sis_learner_id: str,
        size_requested: int,
        page_token: str,
        scope: Scope,
        remaining_s: float | None = None,
    ) -> Page[EngagementDay]:
        learner_id = (
            self._pseudonymizer.pseudonymize(target.tenant_id, sis_learner_id)
            if sis_learner_id
            else ""
        )
        if learner_id:
            await self._check_enrolled(target.tenant_id, learner_id, scope, remaining_s)

        def fetch(page: _Fetch) -> list[EngagementDay]:
            return self._store.engagement(
                target,
                since=since,
                until=until,
                learner_id=learner_id,
                limit=page.limit,
                after=(page.after[0], date.fromisoformat(page.after[1])) if page.after else None,
                **page.filters,
            )

        bound = f"{_target_bound(target)}|{since}|{until}|{learner_id}"
        return await self._page(
            _ENGAGEMENT, bound, size_requested, page_token, scope, remaining_s, fetch
        )

    async def error_breakdown(
        self,
        target: Target,
        since: datetime,
        until: datetime,
        skill_id: str,
        size_requested: int,
        page_token: str,
        scope: Scope,
        remaining_s: float | None = None,
    ) -> Page[ErrorCount]:
        def fetch(page: _Fetch) -> list[ErrorCount]:
            return self._store.error_breakdown(
                target,
                since=since,
                until=until,
                skill_id=skill_id,
                limit=page.limit,
                after=page.after_pair,
                **page.filters,
            )

        bound = f"{_target_bound(target)}|{since.isoformat()}|{until.isoformat()}|{skill_id}"
        return await self._page(
            _ERRORS, bound, size_requested, page_token, scope, remaining_s, fetch
        )

    async def growth(
        self,
        target: Target,
        since: datetime,
        until: datetime,
        size_requested: int,
        page_token: str,
        scope: Scope,
        remaining_s: float | None = None,
    ) -> Page[GrowthRow]:
        def fetch(page: _Fetch) -> list[GrowthRow]:
            return self._store.growth(
                target,
                since=since,
                until=until,
                limit=page.limit,
                after=page.after_pair,
                **page.filters,
            )

        bound = f"{_target_bound(target)}|{since.isoformat()}|{until.isoformat()}"
        return await self._page(
            _GROWTH, bound, size_requested, page_token, scope, remaining_s, fetch
        )

    async def timeline(
        self,
        tenant_id: str,
        sis_learner_id: str,
        since: datetime,
        until: datetime,
        size_requested: int,
        page_token: str,
        scope: Scope,
        remaining_s: float | None = None,
    ) -> tuple[str, Page[TimelineEntry]]:
        learner_id = self._pseudonymizer.pseudonymize(tenant_id, sis_learner_id)
        await self._check_enrolled(tenant_id, learner_id, scope, remaining_s)

        def fetch(page: _Fetch) -> list[TimelineEntry]:
            return self._store.timeline(
                tenant_id,
                learner_id,
                since=since,
                until=until,
                limit=page.limit,
                after=_timeline_cursor(page.after),
                **page.filters,
            )

        bound = f"{tenant_id}|{learner_id}|{since.isoformat()}|{until.isoformat()}"
        page = await self._page(
            _TIMELINE, bound, size_requested, page_token, scope, remaining_s, fetch
        )
        return learner_id, page

    async def learner_view(
        self, tenant_id: str, sis_learner_id: str, scope: Scope, remaining_s: float | None = None
    ) -> LearnerView:
        # Goals are kept per learner, not per class: learner_progress has checked that the
        # roster places the learner in the caller's scope, which makes them the caller's.
        progress = await self.learner_progress(tenant_id, sis_learner_id, scope, remaining_s)
        goals = await self._run(
            lambda: self._store.learner_goals(
                tenant_id, progress.learner_id, timeout_s=self._timeout(remaining_s)
            )
        )
        by_skill = {p.skill_id: p for p in progress.skills}
        return LearnerView(
            learner_id=progress.learner_id,
            skills=progress.skills,
            strengths=[p.skill_id for p in progress.skills if p.level == MASTERED],
            goals=[
                GoalProgress(
                    goal=goal,
                    p_mastered=by_skill[goal.skill_id].p_mastered
                    if goal.skill_id in by_skill
                    else 0.0,
                    reached=goal.skill_id in by_skill and by_skill[goal.skill_id].level == MASTERED,
                )
                for goal in goals
            ],
        )

    async def class_goals(
        self,
        target: Target,
        size_requested: int,
        page_token: str,
        scope: Scope,
        remaining_s: float | None = None,
    ) -> Page[LearnerGoalsRow]:
        def fetch(page: _Fetch) -> list[LearnerGoalsRow]:
            return self._store.class_goals(
                target, limit=page.limit, after=page.after_key, **page.filters
            )

        return await self._page(
            _GOALS, _target_bound(target), size_requested, page_token, scope, remaining_s, fetch
        )

    async def district_rollup(
        self,
        tenant_id: str,
        dimension: str,
        skill_id: str,
        scope: Scope,
        remaining_s: float | None = None,
    ) -> Rollup:
        if dimension not in DIMENSIONS:
            raise ValueError(f"unknown dimension {dimension!r}")
        raw = await self._run(
            lambda: self._store.rollup(
                tenant_id,
                dimension,
                skill_id=skill_id,
                schools=scope.schools,
                timeout_s=self._timeout(remaining_s),
            )
        )
        k = self.settings.min_cell_size
        groups = [Group(key, n, mean, share) for key, n, mean, share in raw.groups]
        total = Group("", *raw.total)
        cells, shown_total = suppress(groups, total, k, partition=dimension != "subgroup")
        return Rollup(dimension, cells, shown_total, k)


# --- reports ---


def encode_cursor(kind: str, bound: str, values: Sequence[str]) -> str:
    """An opaque cursor of a report: the last key served, bound to the report and its target."""
    raw = json.dumps({"k": kind, "b": bound, "v": list(values)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(kind: str, bound: str, token: str, size: int) -> list[str] | None:
    """The key values of a cursor (None: first page); BadPageToken if not issued for this."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursor = json.loads(raw)
        found_kind, found_bound, values = cursor["k"], cursor["b"], cursor["v"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise BadPageToken("page_token is not valid") from exc
    if (
        found_kind != kind
        or not isinstance(values, list)
        or len(values) != size
        or not all(isinstance(v, str) for v in values)
    ):
        raise BadPageToken("page_token is not valid")
    if found_bound != bound:
        raise BadPageToken("page_token belongs to another request")
    return values


@dataclass(frozen=True, slots=True)
class Page(Generic[_R]):
    items: list[_R]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class LearnerNeeds:
    learner_id: str
    reasons: list[SupportReason]


@dataclass(frozen=True, slots=True)
class GoalProgress:
    goal: GoalRow
    p_mastered: float
    reached: bool


@dataclass(frozen=True, slots=True)
class LearnerView:
    learner_id: str
    skills: list[SkillProgress]
    strengths: list[str]
    goals: list[GoalProgress]


@dataclass(frozen=True, slots=True)
class Rollup:
    dimension: str
    cells: list[Group]
    total: Group
    min_cell_size: int


DIMENSIONS = ("school", "grade", "subgroup")
MASTERED = 4


def page_size(requested: int) -> int:
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def recent_window(as_of: datetime, days: int) -> tuple[datetime, datetime]:
    """The `days` calendar days (UTC) up to and including `as_of`'s day, ending at `as_of`."""
    start = datetime.combine(as_of.astimezone(UTC).date(), time.min, tzinfo=UTC)
    return start - timedelta(days=days - 1), as_of


def _target_bound(target: Target) -> str:
    return f"{target.tenant_id}|{target.class_id}|{target.school_id}"


@dataclass(frozen=True, slots=True)
class _Report(Generic[_R]):
    """A paged report: its cursor kind, and the key (`cursor_size` values) of a row it serves."""

    kind: str
    cursor_size: int
    key: Callable[[_R], list[str]]


@dataclass(frozen=True, slots=True)
class _Fetch:
    """What a page asks of its store query besides the query's own arguments."""

    limit: int
    after: list[str] | None  # the cursor's values; None: the first page
    filters: dict[str, Any]  # the caller's scope and the time limit, as the store's keywords

    @property
    def after_key(self) -> str:
        """A one-value cursor as the store takes it ("": from the start)."""
        return self.after[0] if self.after else ""

    @property
    def after_pair(self) -> tuple[str, str] | None:
        return (self.after[0], self.after[1]) if self.after else None


_NEEDS: _Report[LearnerNeeds] = _Report("needs", 1, lambda n: [n.learner_id])
_READY: _Report[ReadyLearner] = _Report("ready", 1, lambda r: [r.learner_id])
_GAPS: _Report[SkillGap] = _Report("gaps", 1, lambda r: [r.skill_id])
_ENGAGEMENT: _Report[EngagementDay] = _Report("engagement", 2, lambda r: [r.learner_id, str(r.day)])
_ERRORS: _Report[ErrorCount] = _Report("errors", 2, lambda r: [r.skill_id, r.error_tag])
_GROWTH: _Report[GrowthRow] = _Report("growth", 2, lambda r: [r.learner_id, r.skill_id])
_TIMELINE: _Report[TimelineEntry] = _Report(
    "timeline", 2, lambda r: [r.occurred_at.isoformat(), r.event_id]
)
_GOALS: _Report[LearnerGoalsRow] = _Report("goals", 1, lambda r: [r.learner_id])


def _by_learner(reasons: list[SupportReason]) -> list[LearnerNeeds]:
    """Support reasons (by learner) grouped per learner: a page holds whole learners."""
    learners: list[LearnerNeeds] = []
    for reason in reasons:
        if not learners or learners[-1].learner_id != reason.learner_id:
            learners.append(LearnerNeeds(reason.learner_id, []))
        learners[-1].reasons.append(reason)
    return learners


def _timeline_cursor(after: list[str] | None) -> tuple[datetime, str] | None:
    """(time, event id) of a timeline cursor; a time that does not parse is not our token."""
    try:
        return (datetime.fromisoformat(after[0]), after[1]) if after else None
    except ValueError as exc:
        raise BadPageToken("page_token is not valid") from exc
