"""The reporting gRPC servicer: authorizes, translates protobuf to the use cases and back.

Who may call what (DESIGN.md §3a), always within the caller's tenant:
- GetLearnerProgress: a learner (their own SIS id), a teacher (evidence from their classes),
  a district admin (their schools, or all when unscoped), a platform admin.
- GetClassHeatmap: a teacher of the class, a district admin (rows of their schools), a platform
  admin. Learners never see other learners' data.
- GetStoreStats: district and platform admins.
`service` principals (learning tools, SIS feeds) write; they read no reports.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from trellis.common.grpc.auth import (
    authorize_class,
    authorize_learner,
    authorize_tenant,
    current_principal,
    require_role,
)
from trellis.common.grpc.errors import InvalidArgument, NotFound, Unavailable
from trellis.common.pb.reporting.v1 import reporting_pb2, reporting_pb2_grpc
from trellis.common.pseudonym import UnknownTenantKey
from trellis.common.settings import Principal, Role
from trellis.reporting.service import BadPageToken, ReportingService, Scope
from trellis.reporting.store.base import SkillProgress, StoreError

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


class ReportingServicer(reporting_pb2_grpc.ReportingServiceServicer):
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
        try:
            progress = await self._service.learner_progress(
                request.tenant_id, request.learner_id, scope_of(principal)
            )
        except UnknownTenantKey as exc:
            raise NotFound("no pseudonymization key for this tenant") from exc
        except StoreError as exc:
            raise Unavailable("the reporting store is unavailable") from exc
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
        try:
            page = await self._service.class_heatmap(
                request.tenant_id,
                request.class_id,
                request.page_size,
                request.page_token,
                scope_of(principal),
            )
        except BadPageToken as exc:
            raise InvalidArgument([("page_token", str(exc))]) from exc
        except StoreError as exc:
            raise Unavailable("the reporting store is unavailable") from exc
        return reporting_pb2.ClassHeatmap(
            class_id=request.class_id,
            cells=[
                reporting_pb2.HeatmapCell(
                    learner_id=cell.learner_id,
                    skill_id=cell.skill_id,
                    p_mastered=cell.p_mastered,
                    level=cell.level,  # type: ignore[arg-type]
                )
                for cell in page.cells
            ],
            next_page_token=page.next_page_token,
        )

    async def GetStoreStats(
        self,
        request: reporting_pb2.GetStoreStatsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> reporting_pb2.StoreStats:
        principal = current_principal()
        require_role(principal, *ADMINS)
        authorize_tenant(principal, request.tenant_id)
        try:
            counts = await self._service.store_stats(request.tenant_id)
        except StoreError as exc:
            raise Unavailable("the reporting store is unavailable") from exc
        return reporting_pb2.StoreStats(
            tables=[
                reporting_pb2.TableRows(table=table, rows=rows)
                for table, rows in sorted(counts.items())
            ]
        )
