"""The read API servicer: scope checks, pseudonymization, and what it answers."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from trellis.common.codec import learner_key
from trellis.common.grpc.auth import set_current_principal
from trellis.common.grpc.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from trellis.common.pb.events.v1 import activity_pb2, envelope_pb2, mastery_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2 as api_pb2
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Principal
from trellis.mastery.adapters.grpc import MasteryServicer
from trellis.mastery.adapters.memory_store import InMemoryLearnerStore
from trellis.mastery.service import MasteryService

TENANT = "district-a"
PSEUDONYMIZER = Pseudonymizer({TENANT: {1: SecretStr("unit-key")}})
LEARNER = PSEUDONYMIZER.pseudonymize(TENANT, "sis-1")


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
def servicer(store: InMemoryLearnerStore) -> MasteryServicer:
    return MasteryServicer(MasteryService(store), PSEUDONYMIZER)


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


async def test_named_skills_come_in_the_order_asked(servicer: MasteryServicer) -> None:
    caller(role="teacher", classes=["c1"])
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
    servicer = MasteryServicer(MasteryService(store, catalog=catalog), PSEUDONYMIZER)
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
    servicer: MasteryServicer, store: InMemoryLearnerStore
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
    )
    with pytest.raises(PermissionDenied):
        await servicer.GetLearnerProfile(
            api_pb2.GetLearnerProfileRequest(tenant_id=TENANT, learner_id="sis-2"),
            None,  # type: ignore[arg-type]
        )


async def test_an_unknown_learner_has_an_empty_profile(servicer: MasteryServicer) -> None:
    caller(role="service")
    reply = await servicer.GetLearnerProfile(
        api_pb2.GetLearnerProfileRequest(tenant_id=TENANT, learner_id="sis-unknown"),
        None,  # type: ignore[arg-type]
    )
    assert reply == api_pb2.LearnerProfile(tenant_id=TENANT, learner_id="sis-unknown")


def class_request(class_id: str, *skills: str) -> api_pb2.GetClassMasteryRequest:
    return api_pb2.GetClassMasteryRequest(
        tenant_id=TENANT, class_id=class_id, skill_ids=list(skills)
    )


@pytest.fixture
def in_class(store: InMemoryLearnerStore) -> InMemoryLearnerStore:
    envelope = profile_event("c", "class-7a")
    envelope.item_attempted.CopyFrom(activity_pb2.ItemAttempted(skill_ids=["a"], correct=False))
    MasteryService(store).record_activity(learner_key(TENANT, LEARNER), envelope)
    return store


async def test_class_mastery_names_learners_by_pseudonym(
    servicer: MasteryServicer, in_class: InMemoryLearnerStore
) -> None:
    caller(role="teacher", classes=["class-7a"])
    reply = await servicer.GetClassMastery(class_request("class-7a", "a"), None)  # type: ignore[arg-type]
    assert reply.class_id == "class-7a"
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


async def test_class_mastery_on_a_worker_without_every_partition_is_unavailable(
    servicer: MasteryServicer, in_class: InMemoryLearnerStore
) -> None:
    caller(role="service")
    in_class.owns_all = lambda: False  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await servicer.GetClassMastery(class_request("class-7a"), None)  # type: ignore[arg-type]
