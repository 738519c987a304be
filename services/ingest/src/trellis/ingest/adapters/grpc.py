"""The ingest gRPC servicer: authorizes, translates protobuf to the use case and back.

Who may write what (DESIGN.md §3a, docs/authorization.md), always within the caller's tenant:
activity from services, teachers, district and platform admins, each event in the caller's
schools (and a teacher's classes, about a learner the roster enrols in that class; for a caller
scoped to schools, about a learner the roster enrols in one of its schools or not at all yet,
`trellis.ingest.scope`); roster from services and admins, each record in the caller's schools
(and, for a caller scoped to schools, about a learner the roster places in one of them or
nowhere yet); the catalog (tenant-wide) from services and admins scoped to the whole tenant.
Erasure requests from services (the SIS feed) and admins only (an erasure deletes the learner
everywhere, which is not a teacher's call), and from a caller scoped to schools only for a
learner the roster enrols in them alone. Learners write nothing here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc

from trellis.common.grpc.auth import (
    authorize_class,
    authorize_school,
    authorize_tenant,
    current_principal,
    require_role,
    scoped_to_schools,
)
from trellis.common.grpc.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from trellis.common.pb.events.v1 import envelope_pb2, roster_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from trellis.common.settings import Role
from trellis.ingest.adapters.metrics import count_outcomes
from trellis.ingest.scope import OutOfScope
from trellis.ingest.service import (
    IngestService,
    ItemOutcome,
    PrerequisiteCycle,
    Status,
    UnmatchedIdentity,
)

_STATUS = {
    Status.ACCEPTED: ingest_pb2.ITEM_STATUS_ACCEPTED,
    Status.DUPLICATE: ingest_pb2.ITEM_STATUS_DUPLICATE,
    Status.REJECTED: ingest_pb2.ITEM_STATUS_REJECTED,
    Status.NOT_STORED: ingest_pb2.ITEM_STATUS_NOT_STORED,
}
WRITERS: tuple[Role, ...] = ("service", "teacher", "district_admin", "platform_admin")
ROSTER_WRITERS: tuple[Role, ...] = ("service", "district_admin", "platform_admin")
ERASERS: tuple[Role, ...] = ROSTER_WRITERS
Context = grpc.aio.ServicerContext[Any, Any]


def _result(outcome: ItemOutcome) -> ingest_pb2.ItemResult:
    return ingest_pb2.ItemResult(
        index=outcome.index,
        event_id=outcome.event_id,
        status=_STATUS[outcome.status],
        violations=[
            ingest_pb2.FieldViolation(field=v.field, reason=v.reason) for v in outcome.violations
        ],
        warnings=[
            ingest_pb2.FieldViolation(field=v.field, reason=v.reason) for v in outcome.warnings
        ],
    )


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(
        self, service: IngestService, max_batch_size: int, max_in_flight: int, ready: bool = True
    ) -> None:
        # False while the dedup window and the replicas load: answers would be wrong, so calls
        # are refused with UNAVAILABLE (retry) until the process sets it.
        self.ready = ready
        self._service = service
        self._max_batch_size = max_batch_size
        self._in_flight = asyncio.Semaphore(max_in_flight)

    def _check_batch(
        self, tenant_id: str, field: str, size: int, writers: tuple[Role, ...]
    ) -> None:
        principal = current_principal()
        require_role(principal, *writers)
        authorize_tenant(principal, tenant_id)
        self._check_ready()
        self._check_tenant(tenant_id)
        if size == 0:
            raise InvalidArgument([(field, "must not be empty")])
        if size > self._max_batch_size:
            raise InvalidArgument([(field, f"holds {size} items, at most {self._max_batch_size}")])
        if self._in_flight.locked():
            # Bounded in-flight work: refuse rather than queue without bound.
            raise ResourceExhausted(retry_after_s=0.5)

    def _check_ready(self) -> None:
        if not self.ready:
            raise Unavailable("ingest is starting (dedup window, catalog and roster replicas)")

    def _check_tenant(self, tenant_id: str) -> None:
        # Only a platform admin can name a tenant other than its token's (which has a key).
        if not self._service.knows_tenant(tenant_id):
            raise InvalidArgument([("tenant_id", "is not a tenant of this ingest")])

    def _authorize_learners(self, tenant_id: str, events: Sequence[envelope_pb2.Envelope]) -> None:
        """A teacher writes only about learners the roster enrols in the event's class: mastery
        takes the classes a learner's events name as the classes that may read them. Nobody but
        ERASERS asks for an erasure."""
        principal = current_principal()
        if principal.role not in ERASERS and any(
            e.WhichOneof("payload") == "learner_erasure_requested" for e in events
        ):
            raise PermissionDenied("erasure requests come from the SIS feed or an administrator")
        if principal.role != "teacher":
            return
        for event in events:
            # An event without a learner is rejected on its own by validation.
            if event.learner_id and not self._service.enrolled(
                tenant_id, event.class_id, event.learner_id
            ):
                raise PermissionDenied("learner not enrolled in the class by the roster")

    def _authorize_roster(self, tenant_id: str, records: Sequence[roster_pb2.RosterRecord]) -> None:
        """A caller scoped to schools writes the roster of its schools only: no record of
        another school, and no class (or enrollment in one) that the roster places elsewhere."""
        principal = current_principal()
        if not scoped_to_schools(principal):
            return
        for record in records:
            for school_id in self._service.roster_schools(tenant_id, record):
                authorize_school(principal, school_id)

    async def _answer(
        self, tenant_id: str, kind: str, outcomes: list[ItemOutcome]
    ) -> list[ingest_pb2.ItemResult]:
        count_outcomes(tenant_id, kind, outcomes)
        storable = [o for o in outcomes if o.status is not Status.REJECTED]
        if storable and all(o.status is Status.NOT_STORED for o in storable):
            raise Unavailable("Kafka did not confirm any record: nothing was stored, retry")
        return [_result(o) for o in outcomes]

    async def RecordEvents(
        self, request: ingest_pb2.RecordEventsRequest, context: Context
    ) -> ingest_pb2.RecordEventsResponse:
        self._check_batch(request.tenant_id, "events", len(request.events), WRITERS)
        _authorize_schools(request.events)
        self._authorize_learners(request.tenant_id, request.events)
        async with self._in_flight:
            outcomes = await _within_scope(
                self._service.record_events(
                    request.tenant_id, request.events, datetime.now(UTC), schools=_schools()
                )
            )
        return ingest_pb2.RecordEventsResponse(
            results=await self._answer(request.tenant_id, "activity", outcomes)
        )

    async def StreamEvents(
        self,
        request_iterator: AsyncIterator[envelope_pb2.Envelope],
        context: Context,
    ) -> AsyncIterator[ingest_pb2.ItemResult]:
        principal = current_principal()
        require_role(principal, *WRITERS)
        self._check_ready()
        index = 0
        async for event in request_iterator:
            # A stream belongs to the caller's tenant; events may leave tenant_id empty.
            tenant_id = event.tenant_id or principal.tenant_id
            authorize_tenant(principal, tenant_id)
            self._check_tenant(tenant_id)
            _authorize_schools([event])
            self._authorize_learners(tenant_id, [event])
            async with self._in_flight:
                (outcome,) = await _within_scope(
                    self._service.record_events(
                        tenant_id, [event], datetime.now(UTC), index, schools=_schools()
                    )
                )
            index += 1
            count_outcomes(tenant_id, "activity", [outcome])
            yield _result(outcome)

    async def UpsertRoster(
        self, request: ingest_pb2.UpsertRosterRequest, context: Context
    ) -> ingest_pb2.UpsertResponse:
        self._check_batch(request.tenant_id, "records", len(request.records), ROSTER_WRITERS)
        self._authorize_roster(request.tenant_id, request.records)
        async with self._in_flight:
            try:
                outcomes = await _within_scope(
                    self._service.upsert_roster(
                        request.tenant_id, request.records, request.identities, schools=_schools()
                    )
                )
            except UnmatchedIdentity as unmatched:
                raise InvalidArgument([(unmatched.field, str(unmatched))]) from unmatched
        return ingest_pb2.UpsertResponse(
            results=await self._answer(request.tenant_id, "roster", outcomes)
        )

    async def UpsertCatalog(
        self, request: ingest_pb2.UpsertCatalogRequest, context: Context
    ) -> ingest_pb2.UpsertResponse:
        self._check_batch(request.tenant_id, "records", len(request.records), ROSTER_WRITERS)
        if scoped_to_schools(current_principal()):
            raise PermissionDenied(
                "the catalog is tenant-wide: callers scoped to schools may not write it"
            )
        async with self._in_flight:
            try:
                outcomes = await self._service.upsert_catalog(request.tenant_id, request.records)
            except PrerequisiteCycle as cycle:
                raise InvalidArgument([("records", str(cycle))]) from cycle
        return ingest_pb2.UpsertResponse(
            results=await self._answer(request.tenant_id, "catalog", outcomes)
        )


def _schools() -> list[str]:
    """The caller's schools when it is scoped to schools (the service then checks the learner of
    each event or roster record against the roster); empty for any other caller."""
    principal = current_principal()
    return principal.schools if scoped_to_schools(principal) else []


async def _within_scope(outcomes: Awaitable[list[ItemOutcome]]) -> list[ItemOutcome]:
    try:
        return await outcomes
    except OutOfScope as out_of_scope:
        raise PermissionDenied(str(out_of_scope)) from out_of_scope


def _authorize_schools(events: Sequence[envelope_pb2.Envelope]) -> None:
    """Every event lies in the caller's schools (and, for a teacher, classes). Whether the class
    lies in the event's school is checked per item against the roster replica."""
    principal = current_principal()
    if principal.schools or principal.role in ("teacher", "learner"):
        for school_id in {e.school_id for e in events}:
            authorize_school(principal, school_id)
    if principal.role in ("teacher", "learner"):
        for class_id in {e.class_id for e in events}:
            authorize_class(principal, class_id)
