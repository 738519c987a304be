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
