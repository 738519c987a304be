"""The read API servicer: scope checks, pseudonymization, what it answers, and routing between
workers (real gRPC servers in this process, each over its own in-memory store)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from pydantic import SecretStr

from trellis.common.codec import learner_key
from trellis.common.grpc.auth import set_current_principal
from trellis.common.grpc.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from trellis.common.grpc.server import ServiceBinding, create_server
from trellis.common.pb.events.v1 import activity_pb2, envelope_pb2, mastery_pb2, roster_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2 as api_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.roster import RosterView
from trellis.common.settings import MasteryServer, Principal, Settings
from trellis.mastery.adapters.grpc import SERVICE_NAME, MasteryServicer
from trellis.mastery.adapters.mastery_topic import MasteryTopic
from trellis.mastery.adapters.memory_store import InMemoryLearnerStore
from trellis.mastery.adapters.partitioning import partition_of
from trellis.mastery.adapters.peers import Peers
from trellis.mastery.service import MasteryService

TENANT = "district-a"
PSEUDONYMIZER = Pseudonymizer({TENANT: {1: SecretStr("unit-key")}})
LEARNER = PSEUDONYMIZER.pseudonymize(TENANT, "sis-1")
ACTIVITY = "trellis.activity.v1"


@dataclass
class FakePlacement:
    """What a worker's placement says: owners per partition (None: here), offsets applied here."""

    partitions: int = 1
    owned_by: dict[int, str | None] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)
    moving: bool = False
    topic: str = ACTIVITY

    def partition_of(self, key: bytes) -> int:
        return partition_of(key, self.partitions)

    async def owners(self) -> dict[int, str | None]:
        if self.moving:
            raise Unavailable("rebalancing")
        return {p: self.owned_by.get(p) for p in range(self.partitions)}

    def applied(self, partition: int) -> int:
        return self.offsets.get(partition, -1)


def make_servicer(
    service: MasteryService,
    placement: FakePlacement | None = None,
    roster: RosterView | None = None,
) -> MasteryServicer:
    return MasteryServicer(
        service,
        PSEUDONYMIZER,
        placement or FakePlacement(offsets={0: 41}),
        Peers(timeout_s=1.0),
        MasteryTopic(Settings().kafka),
        roster or RosterView(),
    )


def placed_classes() -> RosterView:
    """A roster placing class-7a in school-1 and class-7b in school-2, enrolling nobody."""
    roster = RosterView()
    for class_id, school_id in (("class-7a", "school-1"), ("class-7b", "school-2")):
        roster.apply(
            roster_pb2.RosterRecord(
                tenant_id=TENANT,
                school_class=roster_pb2.SchoolClass(sourced_id=class_id, school_id=school_id),
            )
        )
    return roster


def enrol(roster: RosterView, enrollment_id: str, class_id: str, pseudonym: str) -> None:
    roster.apply(
        roster_pb2.RosterRecord(
            tenant_id=TENANT,
            enrollment=roster_pb2.Enrollment(
                sourced_id=enrollment_id, class_id=class_id, user_id=pseudonym, role="learner"
            ),
        )
    )


@pytest.fixture
def store() -> InMemoryLearnerStore:
    store = InMemoryLearnerStore()
    envelope = envelope_pb2.Envelope(
        event_id="evt-1",
        tenant_id=TENANT,
        learner_id=LEARNER,
        item_attempted=activity_pb2.ItemAttempted(skill_ids=["b", "a"], correct=True),
    )
    envelope.occurred_at.FromSeconds(1_790_000_000)
    MasteryService(store).record_activity(learner_key(TENANT, LEARNER), envelope)
    return store


@pytest.fixture
def roster() -> RosterView:
    return placed_classes()


@pytest.fixture
def servicer(store: InMemoryLearnerStore, roster: RosterView) -> MasteryServicer:
    return make_servicer(MasteryService(store), roster=roster)


def caller(**principal: Any) -> None:
    """Authenticate the test as this principal, as the interceptor would. Each async test runs
    in its own task, whose context copy keeps the principal from leaking into other tests."""
    set_current_principal(Principal(tenant_id=TENANT, **principal))


def request(learner_id: str = "sis-1", *skills: str) -> api_pb2.GetLearnerMasteryRequest:
    return api_pb2.GetLearnerMasteryRequest(
        tenant_id=TENANT, learner_id=learner_id, skill_ids=list(skills)
    )


async def test_a_learner_is_read_by_sis_id(servicer: MasteryServicer) -> None:
    caller(role="service")
    reply = await servicer.GetLearnerMastery(request(), None)  # type: ignore[arg-type]

    assert reply.tenant_id == TENANT and reply.learner_id == "sis-1"
    assert [s.skill_id for s in reply.skills] == ["a", "b"]
    skill = reply.skills[0]
    assert skill.p_mastered == pytest.approx(0.6926829268)
    assert skill.level == mastery_pb2.MASTERY_LEVEL_PRACTICING
    assert skill.attempts == 1
    assert skill.model_version == "default-v1"
    assert skill.last_practiced_at.seconds == 1_790_000_000
    assert list(reply.reflects) == [api_pb2.PartitionOffset(topic=ACTIVITY, partition=0, offset=41)]


async def test_named_skills_come_in_the_order_asked(servicer: MasteryServicer) -> None:
    caller(role="service")
    reply = await servicer.GetLearnerMastery(request("sis-1", "z", "b"), None)  # type: ignore[arg-type]
    assert [(s.skill_id, s.level) for s in reply.skills] == [
        ("z", mastery_pb2.MASTERY_LEVEL_NOT_STARTED),
        ("b", mastery_pb2.MASTERY_LEVEL_PRACTICING),
    ]


async def test_an_unknown_learner_has_no_skills(servicer: MasteryServicer) -> None:
    caller(role="service")
    reply = await servicer.GetLearnerMastery(request("sis-unknown"), None)  # type: ignore[arg-type]
    assert list(reply.skills) == []


async def test_learners_read_only_themselves(servicer: MasteryServicer) -> None:
    caller(role="learner", learner_id="sis-1")
    assert (await servicer.GetLearnerMastery(request(), None)).skills  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied):
        await servicer.GetLearnerMastery(request("sis-2"), None)  # type: ignore[arg-type]


async def test_other_tenants_are_out_of_scope(servicer: MasteryServicer) -> None:
    caller(role="district_admin")
    other = api_pb2.GetLearnerMasteryRequest(tenant_id="district-b", learner_id="sis-1")
    with pytest.raises(PermissionDenied):
        await servicer.GetLearnerMastery(other, None)  # type: ignore[arg-type]


async def test_bad_requests(servicer: MasteryServicer) -> None:
    caller(role="platform_admin")
    with pytest.raises(InvalidArgument):
        await servicer.GetLearnerMastery(request(""), None)  # type: ignore[arg-type]
    keyless = api_pb2.GetLearnerMasteryRequest(tenant_id="district-z", learner_id="sis-1")
    with pytest.raises(NotFound):
        await servicer.GetLearnerMastery(keyless, None)  # type: ignore[arg-type]


async def test_a_learner_held_by_another_worker_is_unavailable(
    servicer: MasteryServicer, store: InMemoryLearnerStore
) -> None:
    caller(role="service")
    store.owns = lambda key: False  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await servicer.GetLearnerMastery(request(), None)  # type: ignore[arg-type]


async def test_predict_items_uses_the_catalog_and_the_active_parameter_set(
    store: InMemoryLearnerStore,
) -> None:
    from trellis.common.pb.events.v1 import catalog_pb2
    from trellis.mastery.catalog import CatalogView

    catalog = CatalogView()
    for record in [
        catalog_pb2.CatalogRecord(
            tenant_id=TENANT, item=catalog_pb2.Item(item_id="i-a", skill_ids=["a"])
        ),
        catalog_pb2.CatalogRecord(
            tenant_id=TENANT,
            item=catalog_pb2.Item(item_id="i-new", skill_ids=["new"], difficulty=1.0),
        ),
        catalog_pb2.CatalogRecord(
            tenant_id=TENANT,
            model_parameters=catalog_pb2.ModelParameters(
                version="fit-7", weight_bkt=1.0, weight_difficulty=-1.0, intercept=0.0
            ),
        ),
    ]:
        catalog.apply(record)
    servicer = make_servicer(MasteryService(store, catalog=catalog))
    caller(role="service")
    reply = await servicer.PredictItems(
        api_pb2.PredictItemsRequest(
            tenant_id=TENANT, learner_id="sis-1", item_ids=["i-a", "unknown", "i-new"]
        ),
        None,  # type: ignore[arg-type]
    )
    assert reply.model_version == "fit-7"
    assert [p.item_id for p in reply.predictions] == ["i-a", "i-new"]
    # i-a: the state says 142/205 after one correct answer (the defaults, no decay):
    # 0.692683*0.9 + 0.307317*0.2 = 0.684878...; identity calibration, difficulty 0.
    assert reply.predictions[0].p_correct == pytest.approx(0.684878048780, abs=1e-9)
    # i-new: prior 0.3 -> p_bkt 0.41, logit -0.363965; difficulty 1 -> sigmoid(-1.363965).
    assert reply.predictions[1].p_correct == pytest.approx(0.203596580, abs=1e-9)


async def test_predict_items_is_scoped_like_every_read(servicer: MasteryServicer) -> None:
    caller(role="learner", learner_id="sis-2")
    with pytest.raises(PermissionDenied):
        await servicer.PredictItems(
            api_pb2.PredictItemsRequest(tenant_id=TENANT, learner_id="sis-1", item_ids=["x"]),
            None,  # type: ignore[arg-type]
        )


def profile_event(event_id: str, class_id: str = "") -> envelope_pb2.Envelope:
    envelope = envelope_pb2.Envelope(
        event_id=event_id, tenant_id=TENANT, learner_id=LEARNER, class_id=class_id
    )
    envelope.occurred_at.FromSeconds(1_790_000_100)
    return envelope


async def test_a_learner_profile_is_read_by_sis_id(
    servicer: MasteryServicer, store: InMemoryLearnerStore, roster: RosterView
) -> None:
    service = MasteryService(store)
    goal = profile_event("g", "class-7a")
    goal.goal_set.CopyFrom(
        activity_pb2.GoalSet(goal_id="g1", skill_id="a", description="Add", target_date="2026-12")
    )
    pin = profile_event("p", "class-7b")
    pin.activity_assigned.CopyFrom(
        activity_pb2.ActivityAssigned(activity_id="i-1", activity_kind="item", note="first")
    )
    rest = [profile_event(n) for n in ("i", "m", "x")]
    rest[0].interest_declared.tags.extend(["space"])
    rest[1].preference_set.CopyFrom(activity_pb2.PreferenceSet(modality="audio", pace="slower"))
    rest[2].accommodation_set.accommodations.extend(["extended_time", "text_to_speech"])
    for envelope in [goal, pin, *rest]:
        service.record_activity(learner_key(TENANT, LEARNER), envelope)

    caller(role="learner", learner_id="sis-1")
    reply = await servicer.GetLearnerProfile(
        api_pb2.GetLearnerProfileRequest(tenant_id=TENANT, learner_id="sis-1"),
        None,  # type: ignore[arg-type]
    )
    assert reply == api_pb2.LearnerProfile(
        tenant_id=TENANT,
        learner_id="sis-1",
        goals=[api_pb2.Goal(goal_id="g1", skill_id="a", description="Add", target_date="2026-12")],
        interests=["space"],
        modality="audio",
        pace="slower",
        accommodations=["extended_time", "text_to_speech"],
        pins=[api_pb2.Pin(activity_id="i-1", activity_kind="item", note="first")],
        class_ids=["class-7a", "class-7b"],
        reflects=[api_pb2.PartitionOffset(topic=ACTIVITY, partition=0, offset=41)],
    )
    with pytest.raises(PermissionDenied):
        await servicer.GetLearnerProfile(
            api_pb2.GetLearnerProfileRequest(tenant_id=TENANT, learner_id="sis-2"),
            None,  # type: ignore[arg-type]
        )
    # A teacher of a class the roster enrols them in sees that class only among the classes
    # the learner's events named.
    enrol(roster, "e-7b", "class-7b", LEARNER)
    caller(role="teacher", classes=["class-7b", "class-9"])
    as_teacher = await servicer.GetLearnerProfile(
        api_pb2.GetLearnerProfileRequest(tenant_id=TENANT, learner_id="sis-1"),
        None,  # type: ignore[arg-type]
    )
    assert list(as_teacher.class_ids) == ["class-7b"] and list(as_teacher.interests) == ["space"]


async def test_an_unknown_learner_has_an_empty_profile(servicer: MasteryServicer) -> None:
    caller(role="service")
    reply = await servicer.GetLearnerProfile(
        api_pb2.GetLearnerProfileRequest(tenant_id=TENANT, learner_id="sis-unknown"),
        None,  # type: ignore[arg-type]
    )
    assert reply == api_pb2.LearnerProfile(
        tenant_id=TENANT,
        learner_id="sis-unknown",
        reflects=[api_pb2.PartitionOffset(topic=ACTIVITY, partition=0, offset=41)],
    )


async def test_a_profile_is_read_by_pseudonym_within_the_callers_scope(
    servicer: MasteryServicer, store: InMemoryLearnerStore, roster: RosterView
) -> None:
    interest = profile_event("i")
    interest.interest_declared.tags.extend(["space"])
    MasteryService(store).record_activity(learner_key(TENANT, LEARNER), interest)
    by_pseudonym = api_pb2.GetLearnerProfileRequest(tenant_id=TENANT, pseudonymous_id=LEARNER)
    for principal in ({"role": "service"}, {"role": "district_admin"}):
        caller(**principal)
        reply = await servicer.GetLearnerProfile(by_pseudonym, None)  # type: ignore[arg-type]
        assert (reply.learner_id, reply.pseudonymous_id) == ("", LEARNER)
        assert list(reply.interests) == ["space"]
    narrower: list[dict[str, Any]] = [
        {"role": "teacher", "classes": ["class-7a"]},
        {"role": "district_admin", "schools": ["school-1"]},
        {"role": "service", "schools": ["school-1"]},
    ]
    # Narrower scopes reach the learner once the roster enrols them in one of theirs; a learner
    # never names anyone by pseudonym.
    for enrolled in (False, True):
        for principal in narrower:
            caller(**principal)
            if enrolled:
                await servicer.GetLearnerProfile(by_pseudonym, None)  # type: ignore[arg-type]
            else:
                with pytest.raises(PermissionDenied):
                    await servicer.GetLearnerProfile(by_pseudonym, None)  # type: ignore[arg-type]
        enrol(roster, "e-7a", "class-7a", LEARNER)
    for principal in (
        {"role": "teacher", "classes": ["class-7b"]},
        {"role": "district_admin", "schools": ["school-2"]},
        {"role": "learner", "learner_id": "sis-1"},
    ):
        caller(**principal)
        with pytest.raises(PermissionDenied):
            await servicer.GetLearnerProfile(by_pseudonym, None)  # type: ignore[arg-type]
    caller(role="service")
    both = api_pb2.GetLearnerProfileRequest(
        tenant_id=TENANT, learner_id="sis-1", pseudonymous_id=LEARNER
    )
    with pytest.raises(InvalidArgument):
        await servicer.GetLearnerProfile(both, None)  # type: ignore[arg-type]
    other_tenant = api_pb2.GetLearnerProfileRequest(tenant_id="district-b", pseudonymous_id=LEARNER)
    with pytest.raises(PermissionDenied):
        await servicer.GetLearnerProfile(other_tenant, None)  # type: ignore[arg-type]


def class_request(class_id: str, *skills: str) -> api_pb2.GetClassMasteryRequest:
    return api_pb2.GetClassMasteryRequest(
        tenant_id=TENANT, class_id=class_id, skill_ids=list(skills)
    )


@pytest.fixture
def in_class(store: InMemoryLearnerStore, roster: RosterView) -> InMemoryLearnerStore:
    """The learner enrolled in class-7a by the roster, with an attempt there."""
    envelope = profile_event("c", "class-7a")
    envelope.item_attempted.CopyFrom(activity_pb2.ItemAttempted(skill_ids=["a"], correct=False))
    MasteryService(store).record_activity(learner_key(TENANT, LEARNER), envelope)
    enrol(roster, "e-7a", "class-7a", LEARNER)
    return store


async def test_class_mastery_names_learners_by_pseudonym(
    servicer: MasteryServicer, in_class: InMemoryLearnerStore
) -> None:
    caller(role="teacher", classes=["class-7a"])
    reply = await servicer.GetClassMastery(class_request("class-7a", "a"), None)  # type: ignore[arg-type]
    assert reply.class_id == "class-7a"
    assert list(reply.reflects) == [api_pb2.PartitionOffset(topic=ACTIVITY, partition=0, offset=41)]
    [learner] = reply.learners
    assert (learner.tenant_id, learner.learner_id) == (TENANT, LEARNER)
    [skill] = learner.skills
    # correct (142/205) then wrong: 481/1615, see tests/integration/mastery/test_worker.py
    assert (skill.skill_id, skill.attempts) == ("a", 2)
    assert skill.p_mastered == pytest.approx(481 / 1615, abs=1e-15)
    everything = await servicer.GetClassMastery(class_request("class-7a"), None)  # type: ignore[arg-type]
    assert [s.skill_id for s in everything.learners[0].skills] == ["a", "b"]
    empty = await servicer.GetClassMastery(class_request("class-7a", "zz"), None)  # type: ignore[arg-type]
    assert [s.level for s in empty.learners[0].skills] == [mastery_pb2.MASTERY_LEVEL_NOT_STARTED]


async def test_a_class_is_its_enrolled_learners_per_the_roster(
    servicer: MasteryServicer, store: InMemoryLearnerStore, roster: RosterView
) -> None:
    caller(role="teacher", classes=["class-7a"])
    # The learner's events named class-7a, but the roster does not enrol them: not a member.
    outsider = profile_event("c", "class-7a")
    outsider.item_attempted.CopyFrom(activity_pb2.ItemAttempted(skill_ids=["a"], correct=True))
    MasteryService(store).record_activity(learner_key(TENANT, LEARNER), outsider)
    assert not (await servicer.GetClassMastery(class_request("class-7a"), None)).learners  # type: ignore[arg-type]
    # A newly enrolled learner without events: listed with no skills, or not started.
    enrol(roster, "e-new", "class-7a", "pseudo-new")
    everything = await servicer.GetClassMastery(class_request("class-7a"), None)  # type: ignore[arg-type]
    assert [(m.learner_id, len(m.skills)) for m in everything.learners] == [("pseudo-new", 0)]
    asked = await servicer.GetClassMastery(class_request("class-7a", "a"), None)  # type: ignore[arg-type]
    [skill] = asked.learners[0].skills
    assert (skill.level, skill.attempts) == (mastery_pb2.MASTERY_LEVEL_NOT_STARTED, 0)
    # Enrolled, then the enrollment ends (a tombstone): out of the class and the teacher's reach.
    enrol(roster, "e-7a", "class-7a", LEARNER)
    answer = await servicer.GetClassMastery(class_request("class-7a"), None)  # type: ignore[arg-type]
    assert sorted(m.learner_id for m in answer.learners) == sorted([LEARNER, "pseudo-new"])
    await servicer.GetLearnerMastery(request(), None)  # type: ignore[arg-type]
    roster.remove(TENANT, "enrollment", "e-7a")
    answer = await servicer.GetClassMastery(class_request("class-7a"), None)  # type: ignore[arg-type]
    assert [m.learner_id for m in answer.learners] == ["pseudo-new"]
    with pytest.raises(PermissionDenied):
        await servicer.GetLearnerMastery(request(), None)  # type: ignore[arg-type]


async def test_class_mastery_is_scoped_to_the_callers_classes(
    servicer: MasteryServicer, in_class: InMemoryLearnerStore
) -> None:
    caller(role="teacher", classes=["class-7b"])
    with pytest.raises(PermissionDenied):
        await servicer.GetClassMastery(class_request("class-7a"), None)  # type: ignore[arg-type]
    caller(role="learner", learner_id="sis-1", classes=[])
    with pytest.raises(PermissionDenied):
        await servicer.GetClassMastery(class_request("class-7a"), None)  # type: ignore[arg-type]
    caller(role="district_admin")
    with pytest.raises(PermissionDenied):
        await servicer.GetClassMastery(
            api_pb2.GetClassMasteryRequest(tenant_id="district-b", class_id="class-7a"),
            None,  # type: ignore[arg-type]
        )
    with pytest.raises(InvalidArgument):
        await servicer.GetClassMastery(class_request(""), None)  # type: ignore[arg-type]
    assert (await servicer.GetClassMastery(class_request("class-7a"), None)).learners  # type: ignore[arg-type]


LEARNER_READS = [
    ("GetLearnerMastery", api_pb2.GetLearnerMasteryRequest(tenant_id=TENANT, learner_id="sis-1")),
    ("GetLearnerProfile", api_pb2.GetLearnerProfileRequest(tenant_id=TENANT, learner_id="sis-1")),
    ("PredictItems", api_pb2.PredictItemsRequest(tenant_id=TENANT, learner_id="sis-1")),
]


@pytest.mark.parametrize(("method", "read"), LEARNER_READS)
async def test_teachers_read_the_learners_of_their_classes_only(
    servicer: MasteryServicer, in_class: InMemoryLearnerStore, method: str, read: Any
) -> None:
    # The roster enrols the learner in class-7a only.
    caller(role="teacher", classes=["class-7a"])
    await getattr(servicer, method)(read, None)
    for classes in (["class-7b"], []):
        caller(role="teacher", classes=classes)
        with pytest.raises(PermissionDenied):
            await getattr(servicer, method)(read, None)


@pytest.mark.parametrize(("method", "read"), LEARNER_READS)
async def test_a_learner_without_known_classes_is_outside_a_teachers_scope(
    servicer: MasteryServicer, method: str, read: Any
) -> None:
    caller(role="teacher", classes=["class-7a"])
    with pytest.raises(PermissionDenied):
        await getattr(servicer, method)(read, None)
    unknown = type(read)()
    unknown.CopyFrom(read)
    unknown.learner_id = "sis-unknown"
    with pytest.raises(PermissionDenied):
        await getattr(servicer, method)(unknown, None)


@pytest.mark.parametrize(("method", "read"), LEARNER_READS)
async def test_callers_scoped_to_schools_read_the_learners_of_their_schools(
    servicer: MasteryServicer, in_class: InMemoryLearnerStore, method: str, read: Any
) -> None:
    # The roster enrols the learner in class-7a, which it places in school-1.
    for role in ("district_admin", "service"):
        caller(role=role, schools=["school-1"])
        await getattr(servicer, method)(read, None)
        caller(role=role, schools=["school-2"])
        with pytest.raises(PermissionDenied):
            await getattr(servicer, method)(read, None)
    for principal in ({"role": "district_admin"}, {"role": "service"}):
        caller(**principal)
        await getattr(servicer, method)(read, None)
    set_current_principal(Principal(tenant_id="ops", role="platform_admin"))
    await getattr(servicer, method)(read, None)


async def test_a_learner_holding_a_class_never_reads_it(
    servicer: MasteryServicer, in_class: InMemoryLearnerStore
) -> None:
    caller(role="learner", learner_id="sis-1", classes=["class-7a"])
    with pytest.raises(PermissionDenied):
        await servicer.GetClassMastery(class_request("class-7a"), None)  # type: ignore[arg-type]


async def test_callers_scoped_to_schools_read_the_classes_of_their_schools(
    servicer: MasteryServicer, in_class: InMemoryLearnerStore
) -> None:
    for role in ("district_admin", "service"):
        caller(role=role, schools=["school-1"])
        assert (await servicer.GetClassMastery(class_request("class-7a"), None)).learners  # type: ignore[arg-type]
        for other in ("class-7b", "class-unplaced"):  # another school's; one the roster lacks
            with pytest.raises(PermissionDenied):
                await servicer.GetClassMastery(class_request(other), None)  # type: ignore[arg-type]
    set_current_principal(Principal(tenant_id="ops", role="platform_admin"))
    assert (await servicer.GetClassMastery(class_request("class-7a"), None)).learners  # type: ignore[arg-type]


async def test_reads_while_ownership_moves_are_unavailable(
    store: InMemoryLearnerStore, in_class: InMemoryLearnerStore
) -> None:
    caller(role="service")
    servicer = make_servicer(MasteryService(store), FakePlacement(moving=True), placed_classes())
    with pytest.raises(Unavailable):
        await servicer.GetClassMastery(class_request("class-7a"), None)  # type: ignore[arg-type]
    with pytest.raises(Unavailable):
        await servicer.GetLearnerProfile(
            api_pb2.GetLearnerProfileRequest(tenant_id=TENANT, learner_id="sis-1"),
            None,  # type: ignore[arg-type]
        )


# --- two workers: A holds partition 0, B partition 1 ---

TOKEN = "unit-token"
TOKENS = {
    TOKEN: Principal(tenant_id=TENANT, role="service"),
    "teacher-7a": Principal(tenant_id=TENANT, role="teacher", classes=["class-7a"]),
    "teacher-7b": Principal(tenant_id=TENANT, role="teacher", classes=["class-7b"]),
    "learner-7a": Principal(
        tenant_id=TENANT, role="learner", learner_id="sis-0", classes=["class-7a"]
    ),
}


@dataclass
class Node:
    store: InMemoryLearnerStore
    placement: FakePlacement
    roster: RosterView
    address: str = ""


def sis_in(partition: int) -> str:
    """A SIS id whose learner lands in `partition` of two."""
    for n in range(1000):
        key = learner_key(TENANT, PSEUDONYMIZER.pseudonymize(TENANT, f"sis-{n}"))
        if partition_of(key, 2) == partition:
            return f"sis-{n}"
    raise AssertionError("no such learner")


def attempt_of(sis_id: str, event_id: str, correct: bool) -> tuple[bytes, envelope_pb2.Envelope]:
    learner = PSEUDONYMIZER.pseudonymize(TENANT, sis_id)
    envelope = envelope_pb2.Envelope(
        event_id=event_id,
        tenant_id=TENANT,
        learner_id=learner,
        class_id="class-7a",
        item_attempted=activity_pb2.ItemAttempted(skill_ids=["a"], correct=correct),
    )
    envelope.occurred_at.FromSeconds(1_790_000_000)
    return learner_key(TENANT, learner), envelope


@pytest.fixture
async def workers() -> AsyncIterator[tuple[Node, Node]]:
    nodes = [
        Node(InMemoryLearnerStore(), FakePlacement(partitions=2), placed_classes())
        for _ in range(2)
    ]
    servers = []
    for node in nodes:
        # Each worker follows the whole roster: both learners are in class-7a.
        for partition in (0, 1):
            pseudonym = PSEUDONYMIZER.pseudonymize(TENANT, sis_in(partition))
            enrol(node.roster, f"e-{partition}", "class-7a", pseudonym)
        servicer = make_servicer(MasteryService(node.store), node.placement, node.roster)
        server = create_server(
            MasteryServer(port=0),
            TOKENS,
            [
                ServiceBinding(
                    SERVICE_NAME, mastery_pb2_grpc.add_MasteryServiceServicer_to_server, servicer
                )
            ],
        )
        await server.start()
        node.address = f"127.0.0.1:{server.port}"
        servers.append(server)
    a, b = nodes
    a.placement.owned_by, a.placement.offsets = {1: b.address}, {0: 10}
    b.placement.owned_by, b.placement.offsets = {0: a.address}, {1: 20}
    for node, partition, correct in [(a, 0, True), (b, 1, False)]:
        key, envelope = attempt_of(sis_in(partition), f"evt-{partition}", correct)
        MasteryService(node.store).record_activity(key, envelope)
    try:
        yield a, b
    finally:
        for server in servers:
            await server.stop()


async def ask(address: str, method: str, message: Any, token: str = TOKEN) -> Any:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = mastery_pb2_grpc.MasteryServiceStub(channel)
        return await getattr(stub, method)(
            message, metadata=(("authorization", f"Bearer {token}"),), timeout=5.0
        )


async def test_the_owner_checks_a_teachers_scope_on_forwarded_reads(
    workers: tuple[Node, Node],
) -> None:
    a, b = workers
    held_by_b = sis_in(1)  # enrolled in class-7a
    reads = [
        ("GetLearnerMastery", api_pb2.GetLearnerMasteryRequest),
        ("GetLearnerProfile", api_pb2.GetLearnerProfileRequest),
        ("PredictItems", api_pb2.PredictItemsRequest),
    ]
    for method, message in reads:
        read = message(tenant_id=TENANT, learner_id=held_by_b)
        assert (await ask(a.address, method, read, "teacher-7a")).reflects[0].offset == 20
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await ask(a.address, method, read, "teacher-7b")
        assert failed.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The owner checks again with its own roster replica: B's already holds the enrollment's
    # end, A's not yet; B refuses what A let through.
    b.roster.remove(TENANT, "enrollment", "e-1")
    for method, message in reads:
        read = message(tenant_id=TENANT, learner_id=held_by_b)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await ask(a.address, method, read, "teacher-7a")
        assert failed.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_classes_through_the_server_teachers_yes_learners_never(
    workers: tuple[Node, Node],
) -> None:
    a, _ = workers
    read = api_pb2.GetClassMasteryRequest(tenant_id=TENANT, class_id="class-7a")
    assert len((await ask(a.address, "GetClassMastery", read, "teacher-7a")).learners) == 2
    for token in ("teacher-7b", "learner-7a"):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await ask(a.address, "GetClassMastery", read, token)
        assert failed.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_any_worker_answers_for_the_owner(workers: tuple[Node, Node]) -> None:
    a, b = workers
    held_by_b = sis_in(1)
    read = api_pb2.GetLearnerMasteryRequest(tenant_id=TENANT, learner_id=held_by_b)
    via_a = await ask(a.address, "GetLearnerMastery", read)
    via_b = await ask(b.address, "GetLearnerMastery", read)
    assert via_a == via_b
    assert via_a.learner_id == held_by_b
    [skill] = via_a.skills
    assert (skill.skill_id, skill.attempts) == ("a", 1)
    assert skill.p_mastered == pytest.approx(8.6 / 59, abs=1e-15)  # one wrong answer from 0.3
    assert list(via_a.reflects) == [api_pb2.PartitionOffset(topic=ACTIVITY, partition=1, offset=20)]

    profile = api_pb2.GetLearnerProfileRequest(tenant_id=TENANT, learner_id=held_by_b)
    assert (await ask(a.address, "GetLearnerProfile", profile)).class_ids == ["class-7a"]
    predict = api_pb2.PredictItemsRequest(tenant_id=TENANT, learner_id=held_by_b, item_ids=["x"])
    assert (await ask(a.address, "PredictItems", predict)).reflects[0].offset == 20


async def test_a_profile_by_pseudonym_is_forwarded_to_the_owner(
    workers: tuple[Node, Node],
) -> None:
    a, _ = workers
    held_by_b = PSEUDONYMIZER.pseudonymize(TENANT, sis_in(1))
    profile = api_pb2.GetLearnerProfileRequest(tenant_id=TENANT, pseudonymous_id=held_by_b)
    reply = await ask(a.address, "GetLearnerProfile", profile)
    assert (reply.pseudonymous_id, list(reply.class_ids)) == (held_by_b, ["class-7a"])
    assert list(reply.reflects) == [api_pb2.PartitionOffset(topic=ACTIVITY, partition=1, offset=20)]


async def test_a_class_is_gathered_from_every_owner(workers: tuple[Node, Node]) -> None:
    a, b = workers
    read = api_pb2.GetClassMasteryRequest(tenant_id=TENANT, class_id="class-7a")
    via_a = await ask(a.address, "GetClassMastery", read)
    assert via_a == await ask(b.address, "GetClassMastery", read)
    pseudonyms = [PSEUDONYMIZER.pseudonymize(TENANT, sis_in(p)) for p in (0, 1)]
    assert [learner.learner_id for learner in via_a.learners] == sorted(pseudonyms)
    assert [(o.partition, o.offset) for o in via_a.reflects] == [(0, 10), (1, 20)]
    # A share asked for by partition holds only that partition's learners.
    share = api_pb2.GetClassMasteryRequest(tenant_id=TENANT, class_id="class-7a", partitions=[1])
    only_b = await ask(a.address, "GetClassMastery", share)
    assert [learner.learner_id for learner in only_b.learners] == [pseudonyms[1]]
    assert [(o.partition, o.offset) for o in only_b.reflects] == [(1, 20)]


async def test_a_forwarded_call_is_not_forwarded_again(workers: tuple[Node, Node]) -> None:
    a, b = workers
    b.placement.owned_by = {0: a.address, 1: a.address}  # the maps disagree: ownership is moving
    read = api_pb2.GetLearnerMasteryRequest(tenant_id=TENANT, learner_id=sis_in(1))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await ask(a.address, "GetLearnerMastery", read)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    whole_class = api_pb2.GetClassMasteryRequest(tenant_id=TENANT, class_id="class-7a")
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await ask(a.address, "GetClassMastery", whole_class)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_an_owner_that_does_not_answer_makes_the_read_unavailable(
    workers: tuple[Node, Node],
) -> None:
    a, _ = workers
    a.placement.owned_by = {1: "127.0.0.1:9"}  # nothing listens there
    read = api_pb2.GetLearnerMasteryRequest(tenant_id=TENANT, learner_id=sis_in(1))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await ask(a.address, "GetLearnerMastery", read)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


# --- subscriptions: the scope is checked before anything is read ---


async def first_of(servicer: MasteryServicer, **fields: Any) -> Any:
    request = api_pb2.SubscribeMasteryRequest(tenant_id=TENANT, **fields)
    return await anext(servicer.SubscribeMastery(request, None))  # type: ignore[arg-type]


async def test_subscriptions_stay_in_the_callers_scope(servicer: MasteryServicer) -> None:
    caller(role="teacher", classes=["class-7a"])
    with pytest.raises(PermissionDenied):
        await first_of(servicer)  # a whole tenant
    with pytest.raises(PermissionDenied):
        await first_of(servicer, class_id="class-7b")
    with pytest.raises(PermissionDenied):
        await first_of(servicer, learner_id="sis-1")  # a learner without one of their classes
    caller(role="learner", learner_id="sis-1")
    with pytest.raises(PermissionDenied):
        await first_of(servicer, learner_id="sis-2")
    with pytest.raises(PermissionDenied):
        await first_of(servicer)  # the whole tenant
    caller(role="learner", learner_id="sis-1", classes=["class-7a"])
    with pytest.raises(PermissionDenied):
        await first_of(servicer, class_id="class-7a")  # never a class, even their own
    with pytest.raises(PermissionDenied):
        await first_of(servicer, learner_id="sis-1", class_id="class-7a")
    caller(role="service")
    with pytest.raises(PermissionDenied):
        await anext(
            servicer.SubscribeMastery(
                api_pb2.SubscribeMasteryRequest(tenant_id="district-b"),
                None,  # type: ignore[arg-type]
            )
        )


async def test_subscriptions_refuse_positions_the_topic_does_not_have(
    servicer: MasteryServicer,
) -> None:
    caller(role="service")
    for position in [
        api_pb2.PartitionOffset(partition=99, offset=0),
        api_pb2.PartitionOffset(partition=0, offset=-5),
        api_pb2.PartitionOffset(topic="another.topic", partition=0, offset=0),
    ]:
        with pytest.raises(InvalidArgument):
            await first_of(servicer, after=[position])


async def test_an_owner_refusal_reaches_the_caller_as_it_was(workers: tuple[Node, Node]) -> None:
    a, _ = workers
    # An owner that knows no token of this caller: its refusal is not turned into UNAVAILABLE.
    strict = create_server(
        MasteryServer(port=0),
        {"another-token": Principal(tenant_id=TENANT, role="service")},
        [
            ServiceBinding(
                SERVICE_NAME,
                mastery_pb2_grpc.add_MasteryServiceServicer_to_server,
                make_servicer(
                    MasteryService(InMemoryLearnerStore()), FakePlacement(partitions=2), a.roster
                ),
            )
        ],
    )
    await strict.start()
    try:
        a.placement.owned_by = {1: f"127.0.0.1:{strict.port}"}
        read = api_pb2.GetLearnerMasteryRequest(tenant_id=TENANT, learner_id=sis_in(1))
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await ask(a.address, "GetLearnerMastery", read)
        assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await strict.stop()
