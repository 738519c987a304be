"""The mastery read API (`trellis.mastery.v1.MasteryService`): authorizes, pseudonymizes, routes,
reads.

Each learner's state lives on the worker that owns their activity partition. A worker answers
from its own table what it owns and forwards the rest to the owner (`adapters.peers`); a class is
gathered from the owners of every partition. Answers say which activity offsets they reflect,
read in the same step as the state (`adapters.placement`). During a rebalance or a table
recovery, or when an owner does not answer in time, the answer is UNAVAILABLE (retryable), never
a stale or partial one. See docs/mastery-reads.md.

Class membership comes from the roster topic: every worker follows the whole of it into a
`RosterView` (a replica, as the catalog's). `GetClassMastery` answers for the learners the roster
enrols in the class, named by their pseudonymous id (the service cannot turn a pseudonym back
into a SIS id; the roster uses the same ids); each owner answers for the members in its
partitions, a member without state with no skills (or the requested ones not started).
`GetLearnerProfile` takes such an id too (the recommender grouping a class).

`SubscribeMastery` and `SubscribeMasteryEvents` stream the mastery topic of the caller's tenant
from Kafka directly (any worker serves any subscription), the latter with each event's position.

Scope (DESIGN.md §3a, docs/authorization.md): a learner reads only their own id, never a class; a
teacher reaches a class of theirs and a learner the roster enrols in one; a caller scoped to
schools reaches a class the roster places in one of its schools and a learner enrolled in such a
class; in subscriptions, it receives the events of its schools only. Every worker checks the
scope with its own roster replica (a forwarded read is checked again by the owner).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import grpc

from trellis.common.codec import CodecError, decode_envelope, learner_key
from trellis.common.grpc.auth import (
    authorize_class,
    authorize_class_school,
    authorize_enrolled,
    authorize_learner,
    authorize_tenant,
    current_principal,
    scoped_by_roster,
    scoped_to_schools,
)
from trellis.common.grpc.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from trellis.common.logging import get_logger
from trellis.common.pb.events.v1 import envelope_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer, UnknownTenantKey
from trellis.common.roster import RosterView
from trellis.mastery.adapters.mastery_topic import MasteryTopic
from trellis.mastery.adapters.peers import Peers, was_forwarded
from trellis.mastery.domain import Profile, SkillState
from trellis.mastery.events import LEVELS
from trellis.mastery.service import MasteryService, NotOwned
from trellis.mastery.subscriptions import EventFilter, start_offsets

SERVICE_NAME = mastery_pb2.DESCRIPTOR.services_by_name["MasteryService"].full_name
#: Initial metadata of a subscription, sent once its start positions are fixed.
SUBSCRIBED = ("x-trellis-subscribed", "1")
Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")

_log = get_logger("trellis.mastery.grpc")


class Placement(Protocol):
    """Which worker holds each activity partition, and what this one has applied."""

    topic: str
    partitions: int

    def partition_of(self, key: bytes) -> int: ...

    async def owners(self) -> dict[int, str | None]:
        """Per partition: None if held here and readable, else the owner's gRPC address;
        Unavailable while ownership is moving. A read right after it (no await between) sees
        the state whose offsets `applied` gives."""
        ...

    def applied(self, partition: int) -> int:
        """Offset of the last activity event of `partition` applied here (-1: none)."""
        ...


class MasteryServicer(mastery_pb2_grpc.MasteryServiceServicer):
    def __init__(
        self,
        service: MasteryService,
        pseudonymizer: Pseudonymizer,
        placement: Placement,
        peers: Peers,
        mastery_topic: MasteryTopic,
        roster: RosterView,
    ) -> None:
        self._service = service
        self._roster = roster
        self._pseudonymizer = pseudonymizer
        self._placement = placement
        self._peers = peers
        self._mastery_topic = mastery_topic

    async def GetLearnerMastery(
        self, request: mastery_pb2.GetLearnerMasteryRequest, context: Context
    ) -> mastery_pb2.LearnerMastery:
        pseudonym = self._learner(request.tenant_id, request.learner_id)
        partition, owner = await self._route(learner_key(request.tenant_id, pseudonym), context)
        if owner is not None:
            reply: mastery_pb2.LearnerMastery = await self._peers.call(
                owner, "GetLearnerMastery", request, context
            )
            return reply
        skills = _held(
            lambda: self._service.mastery_of(request.tenant_id, pseudonym, request.skill_ids)
        )
        # In the order asked for; all skills by id when none were named.
        items = list(skills.items()) if request.skill_ids else sorted(skills.items())
        return mastery_pb2.LearnerMastery(
            tenant_id=request.tenant_id,
            learner_id=request.learner_id,
            skills=[_skill(skill_id, state) for skill_id, state in items],
            reflects=self._reflects([partition]),
        )

    def _learner(self, tenant_id: str, learner_id: str) -> str:
        """Authorize the caller for this learner; the learner's pseudonym."""
        principal = current_principal()
        authorize_tenant(principal, tenant_id)
        if not learner_id:
            raise InvalidArgument([("learner_id", "must not be empty")])
        # Learners see only themselves.
        authorize_learner(principal, learner_id)
        try:
            pseudonym = self._pseudonymizer.pseudonymize(tenant_id, learner_id)
        except UnknownTenantKey as exc:
            raise NotFound("no learners are known for this tenant") from exc
        self._authorize_enrolled(tenant_id, pseudonym)
        return pseudonym

    def _authorize_enrolled(self, tenant_id: str, pseudonym: str) -> None:
        """The learner is in the caller's scope through the classes the roster enrols them in
        (teachers, callers scoped to schools; the others need no roster)."""
        principal = current_principal()
        if scoped_by_roster(principal):
            authorize_enrolled(
                principal,
                self._roster.learner_classes(tenant_id, pseudonym),
                lambda class_id: self._roster.school_of(tenant_id, class_id),
            )

    async def _route(self, key: bytes, context: Context) -> tuple[int, str | None]:
        """The partition of `key` and its owner's address (None: this worker)."""
        partition = self._placement.partition_of(key)
        owner = (await self._placement.owners())[partition]
        if owner is not None and was_forwarded(context):
            # The forwarding worker's map and ours disagree: ownership is moving.
            raise Unavailable("this learner's state is moving between mastery workers, retry")
        return partition, owner

    def _reflects(self, partitions: Iterable[int]) -> list[mastery_pb2.PartitionOffset]:
        return [
            mastery_pb2.PartitionOffset(
                topic=self._placement.topic, partition=p, offset=self._placement.applied(p)
            )
            for p in partitions
        ]

    async def GetLearnerProfile(
        self, request: mastery_pb2.GetLearnerProfileRequest, context: Context
    ) -> mastery_pb2.LearnerProfile:
        pseudonym = self._profile_subject(request)
        partition, owner = await self._route(learner_key(request.tenant_id, pseudonym), context)
        if owner is not None:
            reply: mastery_pb2.LearnerProfile = await self._peers.call(
                owner, "GetLearnerProfile", request, context
            )
            return reply
        profile, class_ids = _held(lambda: self._service.profile_of(request.tenant_id, pseudonym))
        principal = current_principal()
        if principal.role == "teacher":
            # A teacher sees their own classes only, not which others the learner attends.
            class_ids = tuple(c for c in class_ids if c in principal.classes)
        answer = _profile(request.tenant_id, request.learner_id, profile, class_ids)
        answer.pseudonymous_id = request.pseudonymous_id
        answer.reflects.extend(self._reflects([partition]))
        return answer

    def _profile_subject(self, request: mastery_pb2.GetLearnerProfileRequest) -> str:
        """The pseudonym of the learner the request names: by SIS id, like every read; or by
        pseudonymous id (a class member of the roster), from any caller but a learner (who
        knows only their SIS id), within the caller's scope per the roster."""
        if not request.pseudonymous_id:
            return self._learner(request.tenant_id, request.learner_id)
        principal = current_principal()
        authorize_tenant(principal, request.tenant_id)
        if request.learner_id:
            raise InvalidArgument([("pseudonymous_id", "name the learner by one id, not two")])
        if principal.role == "learner":
            raise PermissionDenied("a learner names themselves by their own id")
        self._authorize_enrolled(request.tenant_id, request.pseudonymous_id)
        return request.pseudonymous_id

    async def GetClassMastery(
        self, request: mastery_pb2.GetClassMasteryRequest, context: Context
    ) -> mastery_pb2.ClassMastery:
        principal = current_principal()
        authorize_tenant(principal, request.tenant_id)
        if not request.class_id:
            raise InvalidArgument([("class_id", "must not be empty")])
        authorize_class(principal, request.class_id)
        authorize_class_school(
            principal, self._roster.school_of(request.tenant_id, request.class_id)
        )
        count = self._placement.partitions
        if any(p >= count for p in request.partitions):
            raise InvalidArgument([("partitions", f"the activity topic has {count} partitions")])
        owners = await self._placement.owners()
        local: list[int] = []
        remote: dict[str, list[int]] = {}
        for partition in sorted(set(request.partitions)) or range(count):
            owner = owners[partition]
            if owner is None:
                local.append(partition)
            else:
                remote.setdefault(owner, []).append(partition)
        if remote and was_forwarded(context):
            raise Unavailable("class state is moving between mastery workers, retry")
        # This worker's share and its offsets first, in one step; then the others' shares.
        held_here = frozenset(local)
        # The class's members per this worker's roster replica, those of its partitions only.
        learners = self._service.class_mastery(
            request.tenant_id,
            self._roster.class_learners(request.tenant_id, request.class_id),
            request.skill_ids,
            include=lambda key: self._placement.partition_of(key) in held_here,
        )
        answers = [
            mastery_pb2.ClassMastery(
                learners=[
                    mastery_pb2.LearnerMastery(
                        tenant_id=request.tenant_id,
                        learner_id=learner_id,
                        skills=[
                            _skill(skill_id, state)
                            for skill_id, state in (
                                skills.items() if request.skill_ids else sorted(skills.items())
                            )
                        ],
                    )
                    for learner_id, skills in learners.items()
                ],
                reflects=self._reflects(local),
            )
        ]
        answers += await asyncio.gather(
            *(
                self._peers.call(owner, "GetClassMastery", _share(request, share), context)
                for owner, share in remote.items()
            )
        )
        return mastery_pb2.ClassMastery(
            class_id=request.class_id,
            learners=sorted(
                (learner for answer in answers for learner in answer.learners),
                key=lambda learner: learner.learner_id,
            ),
            reflects=sorted(
                (offset for answer in answers for offset in answer.reflects),
                key=lambda offset: offset.partition,
            ),
        )

    async def PredictItems(
        self, request: mastery_pb2.PredictItemsRequest, context: Context
    ) -> mastery_pb2.PredictItemsResponse:
        pseudonym = self._learner(request.tenant_id, request.learner_id)
        partition, owner = await self._route(learner_key(request.tenant_id, pseudonym), context)
        if owner is not None:
            reply: mastery_pb2.PredictItemsResponse = await self._peers.call(
                owner, "PredictItems", request, context
            )
            return reply
        # A read: the wall clock only decides how far recall has decayed in this answer.
        now = datetime.now(UTC)
        predicted = _held(
            lambda: self._service.predict_items(request.tenant_id, pseudonym, request.item_ids, now)
        )
        return mastery_pb2.PredictItemsResponse(
            predictions=[
                mastery_pb2.ItemPrediction(item_id=item_id, p_correct=p)
                for item_id, p in predicted.items
            ],
            model_version=predicted.model_version,
            reflects=self._reflects([partition]),
        )

    async def SubscribeMastery(
        self, request: mastery_pb2.SubscribeMasteryRequest, context: Context
    ) -> AsyncIterator[envelope_pb2.Envelope]:
        async for _, envelope in self._subscribe(request, context):
            yield envelope

    async def SubscribeMasteryEvents(
        self, request: mastery_pb2.SubscribeMasteryRequest, context: Context
    ) -> AsyncIterator[mastery_pb2.MasteryEventAt]:
        async for position, envelope in self._subscribe(request, context):
            yield mastery_pb2.MasteryEventAt(event=envelope, position=position)

    async def _subscribe(
        self, request: mastery_pb2.SubscribeMasteryRequest, context: Context
    ) -> AsyncIterator[tuple[mastery_pb2.PartitionOffset, envelope_pb2.Envelope]]:
        """The tenant's mastery events that pass the request's filter, from its start positions."""
        principal = current_principal()
        authorize_tenant(principal, request.tenant_id)
        if request.class_id:
            authorize_class(principal, request.class_id)
        pseudonym = (
            self._learner(request.tenant_id, request.learner_id) if request.learner_id else ""
        )
        if principal.role == "teacher" and not request.class_id:
            # The class names the teacher's scope.
            raise PermissionDenied("name one of the caller's classes")
        if principal.role == "learner" and not pseudonym:
            raise PermissionDenied("a learner subscribes to their own events only")
        topic = self._mastery_topic
        if any(position.topic not in ("", topic.name) for position in request.after):
            raise InvalidArgument([("after", f"positions are on topic {topic.name}")])
        try:
            start = start_offsets(
                range(topic.partitions),
                {position.partition: position.offset for position in request.after},
                request.from_beginning,
            )
        except ValueError as exc:
            raise InvalidArgument([("after", str(exc))]) from exc
        if pseudonym:
            # One learner's events are all in the partition of their key.
            own = self._placement.partition_of(learner_key(request.tenant_id, pseudonym))
            start = {own: start[own]}
        # A service or admin scoped to schools receives the events of its schools only.
        schools = frozenset(principal.schools) if scoped_to_schools(principal) else frozenset()
        wanted = EventFilter(request.tenant_id, request.class_id, pseudonym, schools)
        reader = topic.reader(start)
        try:
            await reader.open()
            await context.send_initial_metadata((SUBSCRIBED,))
            async for record in reader.records():
                if not wanted.accepts_key(record.key):
                    continue
                try:
                    envelope = decode_envelope(record.value, record.headers)
                except CodecError:
                    _log.warning(
                        "undecodable mastery event skipped",
                        partition=record.partition,
                        offset=record.offset,
                    )
                    continue
                if wanted.accepts(envelope) and self._member(request, envelope):
                    position = mastery_pb2.PartitionOffset(
                        topic=topic.name, partition=record.partition, offset=record.offset
                    )
                    yield position, envelope
        finally:
            reader.close()

    def _member(
        self, request: mastery_pb2.SubscribeMasteryRequest, envelope: envelope_pb2.Envelope
    ) -> bool:
        """With a class filter: the event's learner is enrolled in the class, per the roster now
        (an event naming the class, of a learner who left it or was never in it, is not the
        class's)."""
        return not request.class_id or self._roster.enrolled(
            request.tenant_id, request.class_id, envelope.learner_id
        )


def _held(read: Callable[[], T]) -> T:
    """A read of this worker's table; Unavailable if the state moved away meanwhile."""
    try:
        return read()
    except NotOwned as exc:
        raise Unavailable("this state is moving between mastery workers, retry") from exc


def _share(
    request: mastery_pb2.GetClassMasteryRequest, partitions: list[int]
) -> mastery_pb2.GetClassMasteryRequest:
    share = mastery_pb2.GetClassMasteryRequest()
    share.CopyFrom(request)
    share.ClearField("partitions")
    share.partitions.extend(partitions)
    return share


def _profile(
    tenant_id: str, learner_id: str, profile: Profile, class_ids: tuple[str, ...]
) -> mastery_pb2.LearnerProfile:
    return mastery_pb2.LearnerProfile(
        tenant_id=tenant_id,
        learner_id=learner_id,
        goals=[
            mastery_pb2.Goal(
                goal_id=g.goal_id,
                skill_id=g.skill_id,
                description=g.description,
                target_date=g.target_date,
            )
            for g in profile.goals
        ],
        interests=list(profile.interests),
        modality=profile.modality,
        pace=profile.pace,
        accommodations=list(profile.accommodations),
        pins=[
            mastery_pb2.Pin(
                activity_id=p.activity_id,
                activity_kind=p.activity_kind,
                skill_id=p.skill_id,
                note=p.note,
            )
            for p in profile.pins
        ],
        class_ids=list(class_ids),
    )


def _skill(skill_id: str, state: SkillState) -> mastery_pb2.SkillMastery:
    message = mastery_pb2.SkillMastery(
        skill_id=skill_id,
        p_mastered=state.effective,
        level=LEVELS[state.level],
        attempts=state.attempts,
        model_version=state.model_version,
        struggling=state.struggling,
        overridden=state.override is not None,
    )
    if state.last_event_time is not None:
        message.last_practiced_at.FromDatetime(state.last_event_time)
    return message
