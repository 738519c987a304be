"""The reporting gRPC servicer: authorizes, translates protobuf to the use cases and back.

Who may call what (DESIGN.md §3a), always within the caller's tenant:
- GetLearnerProgress: a learner (their own SIS id), a teacher (evidence from their classes),
  a district admin (their schools, or all when unscoped), a platform admin.
- GetClassHeatmap: a teacher of the class, a district admin (rows of their schools), a platform
  admin. Learners never see other learners' data.
- GetStoreStats: district admins of the whole tenant (the counts are the tenant's) and platform
  admins.
`service` principals (learning tools, SIS feeds) write; they read no reports.
Rows outside a caller's classes or schools are filtered out of every answer; a learner the roster
does not enrol in a teacher's classes (or a class of a scoped admin's schools) is refused with
PERMISSION_DENIED, see docs/authorization.md.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from trellis.common.grpc.auth import (
    authorize_class,
    authorize_learner,
    authorize_school,
    authorize_tenant,
    current_principal,
    require_role,
    scoped_to_schools,
)
from trellis.common.grpc.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from trellis.common.pb.reporting.v1 import reporting_pb2, reporting_pb2_grpc
from trellis.common.pseudonym import UnknownTenantKey
from trellis.common.settings import Principal, Role
from trellis.reporting.service import (
    MASTERED as MASTERED_LEVEL,
)
from trellis.reporting.service import (
    BadPageToken,
    LearnerOutOfScope,
    ReportingService,
    Scope,
    recent_window,
)
from trellis.reporting.store.base import SkillProgress, StoreError, Target
from trellis.reporting.suppression import Group, Suppression

__all__ = ["SERVICE_NAME", "ReportingServicer"]

SERVICE_NAME = reporting_pb2.DESCRIPTOR.services_by_name["ReportingService"].full_name
PROGRESS_READERS: tuple[Role, ...] = ("learner", "teacher", "district_admin", "platform_admin")
HEATMAP_READERS: tuple[Role, ...] = ("teacher", "district_admin", "platform_admin")
ADMINS: tuple[Role, ...] = ("district_admin", "platform_admin")


def scope_of(principal: Principal) -> Scope:
    """The rows of its tenant a principal may read."""
    if principal.role in ("platform_admin", "learner"):
        # A learner is limited to their own id by authorize_learner.
        return Scope()
    if principal.role == "teacher":
        return Scope(classes=list(principal.classes), schools=list(principal.schools) or None)
    return Scope(schools=list(principal.schools) or None)


def _skill(progress: SkillProgress) -> reporting_pb2.SkillProgress:
    updated_at = Timestamp()
    updated_at.FromDatetime(progress.updated_at)
    return reporting_pb2.SkillProgress(
        skill_id=progress.skill_id,
        p_mastered=progress.p_mastered,
        level=progress.level,  # type: ignore[arg-type]
        attempts=progress.attempts,
        updated_at=updated_at,
    )


_M = TypeVar("_M", bound=Message)


def _copied(message_type: type[_M], row: Any) -> _M:
    """The message of a store row (a dataclass) whose fields it has, by the same names and with
    plain values (an enum field takes the row's int). A field the message lacks raises."""
    return message_type(**{f.name: getattr(row, f.name) for f in fields(row)})


class _CoreServicer(reporting_pb2_grpc.ReportingServiceServicer):
    """Progress, heatmap and statistics."""

    def __init__(self, service: ReportingService) -> None:
        self._service = service

    async def GetLearnerProgress(
        self,
        request: reporting_pb2.GetLearnerProgressRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> reporting_pb2.LearnerProgress:
        principal = current_principal()
        require_role(principal, *PROGRESS_READERS)
        authorize_tenant(principal, request.tenant_id)
        if not request.learner_id:
            raise InvalidArgument([("learner_id", "must not be empty")])
        authorize_learner(principal, request.learner_id)
        progress = await _answer(
            self._service.learner_progress(
                request.tenant_id, request.learner_id, scope_of(principal), _remaining(context)
            )
        )
        return reporting_pb2.LearnerProgress(
            learner_id=progress.learner_id, skills=[_skill(s) for s in progress.skills]
        )

    async def GetClassHeatmap(
        self,
        request: reporting_pb2.GetClassHeatmapRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> reporting_pb2.ClassHeatmap:
        principal = current_principal()
        require_role(principal, *HEATMAP_READERS)
        authorize_tenant(principal, request.tenant_id)
        if not request.class_id:
            raise InvalidArgument([("class_id", "must not be empty")])
        authorize_class(principal, request.class_id)
        page = await _answer(
            self._service.class_heatmap(
                request.tenant_id,
                request.class_id,
                request.page_size,
                request.page_token,
                scope_of(principal),
            )
        )
        return reporting_pb2.ClassHeatmap(
            class_id=request.class_id,
            cells=[_copied(reporting_pb2.HeatmapCell, cell) for cell in page.cells],
            next_page_token=page.next_page_token,
            learner_ids=page.learner_ids,
        )

    async def GetStoreStats(
        self,
        request: reporting_pb2.GetStoreStatsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> reporting_pb2.StoreStats:
        principal = current_principal()
        require_role(principal, *ADMINS)
        authorize_tenant(principal, request.tenant_id)
        if scoped_to_schools(principal):
            raise PermissionDenied("store statistics cover the whole tenant, not only its schools")
        counts = await _answer(self._service.store_stats(request.tenant_id))
        return reporting_pb2.StoreStats(
            tables=[
                reporting_pb2.TableRows(table=table, rows=rows)
                for table, rows in sorted(counts.items())
            ]
        )


# --- reports ---

REPORT_READERS: tuple[Role, ...] = ("teacher", "district_admin", "platform_admin")
_REASONS = {
    "low_mastery": reporting_pb2.SUPPORT_REASON_KIND_LOW_MASTERY,
    "struggling": reporting_pb2.SUPPORT_REASON_KIND_STRUGGLING,
    "low_engagement": reporting_pb2.SUPPORT_REASON_KIND_LOW_ENGAGEMENT,
}
_DIMENSIONS = {
    reporting_pb2.ROLLUP_DIMENSION_SCHOOL: "school",
    reporting_pb2.ROLLUP_DIMENSION_GRADE: "grade",
    reporting_pb2.ROLLUP_DIMENSION_SUBGROUP: "subgroup",
}
_SUPPRESSION = {
    Suppression.SHOWN: reporting_pb2.CELL_SUPPRESSION_SHOWN,
    Suppression.PRIMARY: reporting_pb2.CELL_SUPPRESSION_PRIMARY,
    Suppression.COMPLEMENTARY: reporting_pb2.CELL_SUPPRESSION_COMPLEMENTARY,
}


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _when(ts: Timestamp, default: datetime) -> datetime:
    """A request time, or `default` when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return default
    return ts.ToDatetime(tzinfo=UTC)


def _remaining(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else float(remaining)


class _PagedRequest(Protocol):
    @property
    def page_size(self) -> int: ...
    @property
    def page_token(self) -> str: ...


def _paging(
    request: _PagedRequest, principal: Principal, context: grpc.aio.ServicerContext[Any, Any]
) -> tuple[int, str, Scope, float | None]:
    """The last arguments of every paged report: page size and token, the caller's scope and
    the time left before the caller's deadline."""
    return request.page_size, request.page_token, scope_of(principal), _remaining(context)


def authorize_target(principal: Principal, target: reporting_pb2.ReportTarget) -> Target:
    """A report target of the caller's tenant and scope: exactly one of class and school."""
    require_role(principal, *REPORT_READERS)
    authorize_tenant(principal, target.tenant_id)
    if bool(target.class_id) == bool(target.school_id):
        raise InvalidArgument([("target", "name exactly one of class_id and school_id")])
    if target.class_id:
        authorize_class(principal, target.class_id)
    else:
        authorize_school(principal, target.school_id)
    return Target(target.tenant_id, class_id=target.class_id, school_id=target.school_id)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _period(
    since: Timestamp, until: Timestamp, now: datetime, days: int
) -> tuple[datetime, datetime]:
    start, _ = recent_window(now, days)
    begin, end = _when(since, start), _when(until, now)
    if end <= begin:
        raise InvalidArgument([("until", "must be after since")])
    return begin, end


_T = TypeVar("_T")


async def _answer(call: Awaitable[_T]) -> _T:
    """A report use case's answer, its failures as gRPC statuses."""
    try:
        return await call
    except BadPageToken as exc:
        raise InvalidArgument([("page_token", str(exc))]) from exc
    except LearnerOutOfScope as exc:
        raise PermissionDenied(str(exc)) from exc
    except UnknownTenantKey as exc:
        raise NotFound("no pseudonymization key for this tenant") from exc
    except StoreError as exc:
        raise Unavailable("the reporting store is unavailable") from exc


class ReportingServicer(_CoreServicer):
    """Every method of `trellis.reporting.v1.ReportingService`."""

    async def GetNeedsSupport(
        self,
        request: reporting_pb2.GetNeedsSupportRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> reporting_pb2.NeedsSupport:
        principal = current_principal()
        target = authorize_target(principal, request.target)
        page = await _answer(
            self._service.needs_support(
                target,
                _when(request.as_of, datetime.now(UTC)),
                *_paging(request, principal, context),
            )
        )
        return reporting_pb2.NeedsSupport(
            learners=[
                reporting_pb2.LearnerNeeds(
                    learner_id=needs.learner_id,
                    reasons=[
                        reporting_pb2.SupportReason(
                            kind=_REASONS.get(r.reason, 0),  # type: ignore[arg-type]
                            skill_id=r.skill_id,
                            value=r.value,
                            detail=r.detail,
                        )
                        for r in needs.reasons
                    ],
                )
                for needs in page.items
            ],
            next_page_token=page.next_page_token,
        )

    async def GetReadyToAccelerate(
        self,
        request: reporting_pb2.GetReadyToAccelerateRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> reporting_pb2.ReadyToAccelerate:
        principal = current_principal()
        target = authorize_target(principal, request.target)
        page = await _answer(
            self._service.ready_to_accelerate(
                target,
                _when(request.as_of, datetime.now(UTC)),
                *_paging(request, principal, context),
            )
        )
        return reporting_pb2.ReadyToAccelerate(
            learners=[_copied(reporting_pb2.ReadyLearner, r) for r in page.items],
            next_page_token=page.next_page_token,
        )

    async def GetSkillGaps(
        self,
        request: reporting_pb2.GetSkillGapsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> reporting_pb2.SkillGaps:
        principal = current_principal()
        target = authorize_target(principal, request.target)
        page = await _answer(
            self._service.skill_gaps(target, *_paging(request, principal, context))
        )
        return reporting_pb2.SkillGaps(
            skills=[_copied(reporting_pb2.SkillGap, g) for g in page.items],
            next_page_token=page.next_page_token,
        )

    async def GetEngagement(
        self,
        request: reporting_pb2.GetEngagementRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> reporting_pb2.Engagement:
        principal = current_principal()
        target = authorize_target(principal, request.target)
        # Default: the `recent_days` calendar days (UTC) up to and including today.
        tomorrow = datetime.now(UTC).date() + timedelta(days=1)
        since = _when(
            request.since, _midnight(tomorrow) - timedelta(self._service.settings.recent_days)
        )
        until = _when(request.until, _midnight(tomorrow))
        if until.date() <= since.date():
            raise InvalidArgument([("until", "must be a later day than since")])
        page = await _answer(
            self._service.engagement(
                target,
                since.date(),
                until.date(),
                request.learner_id,
                *_paging(request, principal, context),
            )
        )
        return reporting_pb2.Engagement(
            days=[
                reporting_pb2.EngagementDay(
                    learner_id=d.learner_id,
                    day=d.day.isoformat(),
                    events=d.events,
                    attempts=d.attempts,
                    correct=d.correct,
                    attempt_seconds=d.attempt_seconds,
                    resources=d.resources,
                    resource_seconds=d.resource_seconds,
                )
                for d in page.items
            ],
            next_page_token=page.next_page_token,
        )

    async def GetErrorBreakdown(
        self,
        request: reporting_pb2.GetErrorBreakdownRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> reporting_pb2.ErrorBreakdown:
        principal = current_principal()
        target = authorize_target(principal, request.target)
        now = datetime.now(UTC)
        since, until = _period(
            request.since, request.until, now, self._service.settings.recent_days
        )
        page = await _answer(
            self._service.error_breakdown(
                target, since, until, request.skill_id, *_paging(request, principal, context)
            )
        )
        return reporting_pb2.ErrorBreakdown(
            errors=[_copied(reporting_pb2.ErrorCount, e) for e in page.items],
            next_page_token=page.next_page_token,
        )

    async def GetGrowth(
        self,
        request: reporting_pb2.GetGrowthRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> reporting_pb2.GrowthReport:
        principal = current_principal()
        target = authorize_target(principal, request.target)
        now = datetime.now(UTC)
        since, until = _period(request.since, request.until, now, 30)
        page = await _answer(
            self._service.growth(target, since, until, *_paging(request, principal, context))
        )
        return reporting_pb2.GrowthReport(
            rows=[_copied(reporting_pb2.Growth, g) for g in page.items],
            next_page_token=page.next_page_token,
        )

    async def GetLearnerTimeline(
        self,
        request: reporting_pb2.GetLearnerTimelineRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> reporting_pb2.LearnerTimeline:
        principal = current_principal()
        require_role(principal, *PROGRESS_READERS)
        authorize_tenant(principal, request.tenant_id)
        if not request.learner_id:
            raise InvalidArgument([("learner_id", "must not be empty")])
        authorize_learner(principal, request.learner_id)
        now = datetime.now(UTC)
        since, until = _period(request.since, request.until, now, 30)
        learner_id, page = await _answer(
            self._service.timeline(
                request.tenant_id,
                request.learner_id,
                since,
                until,
                *_paging(request, principal, context),
            )
        )
        entries = []
        for e in page.items:
            entry = reporting_pb2.TimelineEntry(
                occurred_at=_timestamp(e.occurred_at),
                event_id=e.event_id,
                kind=e.kind,
                skill_ids=e.skill_ids,
                activity_id=e.activity_id,
                detail=e.detail,
                duration_seconds=e.duration_seconds,
            )
            if e.score is not None:
                entry.score = e.score
            entries.append(entry)
        return reporting_pb2.LearnerTimeline(
            learner_id=learner_id, entries=entries, next_page_token=page.next_page_token
        )

    async def GetLearnerView(
        self,
        request: reporting_pb2.GetLearnerViewRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> reporting_pb2.LearnerView:
        principal = current_principal()
        require_role(principal, *PROGRESS_READERS)
        authorize_tenant(principal, request.tenant_id)
        if not request.learner_id:
            raise InvalidArgument([("learner_id", "must not be empty")])
        authorize_learner(principal, request.learner_id)
        view = await _answer(
            self._service.learner_view(
                request.tenant_id, request.learner_id, scope_of(principal), _remaining(context)
            )
        )
        return reporting_pb2.LearnerView(
            learner_id=view.learner_id,
            skills=[_skill(s) for s in view.skills],
            strengths=view.strengths,
            goals=[
                reporting_pb2.GoalProgress(
                    goal_id=g.goal.goal_id,
                    skill_id=g.goal.skill_id,
                    target_date=g.goal.target_date,
                    set_at=_timestamp(g.goal.set_at),
                    p_mastered=g.p_mastered,
                    reached=g.reached,
                )
                for g in view.goals
            ],
        )

    async def GetClassGoals(
        self,
        request: reporting_pb2.GetClassGoalsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> reporting_pb2.ClassGoals:
        principal = current_principal()
        target = authorize_target(principal, request.target)
        page = await _answer(
            self._service.class_goals(target, *_paging(request, principal, context))
        )
        learners = []
        for row in page.items:
            reflections = []
            for r in row.reflections:
                reflection = reporting_pb2.Reflection(
                    reflection_id=r.reflection_id,
                    skill_id=r.skill_id,
                    submitted_at=_timestamp(r.submitted_at),
                )
                if r.confidence is not None:
                    reflection.confidence = r.confidence
                reflections.append(reflection)
            learners.append(
                reporting_pb2.LearnerGoals(
                    learner_id=row.learner_id,
                    goals=[
                        reporting_pb2.GoalProgress(
                            goal_id=goal.goal_id,
                            skill_id=goal.skill_id,
                            target_date=goal.target_date,
                            set_at=_timestamp(goal.set_at),
                            p_mastered=p,
                            reached=level == MASTERED_LEVEL,
                        )
                        for goal, p, level in row.goals
                    ],
                    reflections=reflections,
                )
            )
        return reporting_pb2.ClassGoals(learners=learners, next_page_token=page.next_page_token)

    async def GetDistrictRollup(
        self,
        request: reporting_pb2.GetDistrictRollupRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> reporting_pb2.DistrictRollup:
        principal = current_principal()
        require_role(principal, *ADMINS)
        authorize_tenant(principal, request.tenant_id)
        dimension = _DIMENSIONS.get(request.dimension)
        if dimension is None:
            raise InvalidArgument([("dimension", "must be school, grade or subgroup")])
        rollup = await _answer(
            self._service.district_rollup(
                request.tenant_id,
                dimension,
                request.skill_id,
                scope_of(principal),
                _remaining(context),
            )
        )

        def cell(group: Group) -> reporting_pb2.RollupCell:
            return reporting_pb2.RollupCell(
                key=group.key,
                learners=group.learners,
                mean_mastery=group.mean_mastery,
                mastered_share=group.mastered_share,
                suppression=_SUPPRESSION[group.suppression],
            )

        return reporting_pb2.DistrictRollup(
            dimension=request.dimension,
            cells=[cell(g) for g in rollup.cells],
            total=cell(rollup.total),
            min_cell_size=rollup.min_cell_size,
        )
