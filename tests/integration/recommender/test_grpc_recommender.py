"""The recommender process (replica followers, servicer, mastery client) against the real broker's
test topics and a fake mastery read API (a real grpc.aio server with canned answers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import TEST_TENANT
from trellis.common.codec import Encoded, encode_catalog, encode_roster
from trellis.common.kafka import create_producer
from trellis.common.pb.events.v1 import catalog_pb2, mastery_pb2, roster_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2 as api
from trellis.common.pb.mastery.v1 import mastery_pb2_grpc
from trellis.common.pb.recommender.v1 import recommender_pb2 as rec
from trellis.common.pb.recommender.v1 import recommender_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Principal, Settings
from trellis.recommender.adapters.app import Recommender

MASTERED = mastery_pb2.MASTERY_LEVEL_MASTERED
PRACTICING = mastery_pb2.MASTERY_LEVEL_PRACTICING
TOKENS = {
    "tool": Principal(tenant_id=TEST_TENANT, role="service"),
    "teacher-c1": Principal(tenant_id=TEST_TENANT, role="teacher", classes=["c1"]),
    "teacher-c2": Principal(tenant_id=TEST_TENANT, role="teacher", classes=["c2"]),
    "learner-1": Principal(tenant_id=TEST_TENANT, role="learner", learner_id="sis-1"),
    "admin-school-1": Principal(tenant_id=TEST_TENANT, role="district_admin", schools=["school-1"]),
    "admin-school-2": Principal(tenant_id=TEST_TENANT, role="district_admin", schools=["school-2"]),
    "tool-school-1": Principal(tenant_id=TEST_TENANT, role="service", schools=["school-1"]),
    "tool-school-2": Principal(tenant_id=TEST_TENANT, role="service", schools=["school-2"]),
    "learner-1-in-c1": Principal(
        tenant_id=TEST_TENANT, role="learner", learner_id="sis-1", classes=["c1"]
    ),
    "other-tenant": Principal(tenant_id="elsewhere", role="service"),
}
SKILLS = [("count", ()), ("add", ("count",)), ("multiply", ("add",)), ("shapes", ())]


def auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def skill_mastery(skill_id: str, p: float, level: int, attempts: int = 5) -> api.SkillMastery:
    return api.SkillMastery(skill_id=skill_id, p_mastered=p, level=level, attempts=attempts)  # type: ignore[arg-type]


@dataclass
class FakeMastery(mastery_pb2_grpc.MasteryServiceServicer):
    """Canned answers; `fail[method]` makes a method answer with that status code; `delay_s`
    makes every answer late; `calls` records (method, learner or class, authorization)."""

    states: dict[str, list[api.SkillMastery]] = field(default_factory=dict)
    profiles: dict[str, api.LearnerProfile] = field(default_factory=dict)
    predictions: dict[str, float] = field(default_factory=dict)
    fail: dict[str, grpc.StatusCode] = field(default_factory=dict)
    delay_s: float = 0.0
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    async def _enter(self, method: str, key: str, context: Any) -> None:
        metadata = dict(context.invocation_metadata() or ())
        self.calls.append((method, key, metadata.get("authorization", "")))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if method in self.fail:
            await context.abort(self.fail[method], f"{method} failing on purpose")

    async def GetLearnerMastery(self, request: Any, context: Any) -> api.LearnerMastery:
        await self._enter("GetLearnerMastery", request.learner_id, context)
        return api.LearnerMastery(
            tenant_id=request.tenant_id,
            learner_id=request.learner_id,
            skills=self.states.get(request.learner_id, []),
        )

    async def GetLearnerProfile(self, request: Any, context: Any) -> api.LearnerProfile:
        await self._enter("GetLearnerProfile", request.learner_id, context)
        return self.profiles.get(request.learner_id, api.LearnerProfile())

    async def GetClassMastery(self, request: Any, context: Any) -> api.ClassMastery:
        await self._enter("GetClassMastery", request.class_id, context)
        return api.ClassMastery(
            class_id=request.class_id,
            learners=[
                api.LearnerMastery(tenant_id=request.tenant_id, learner_id=lid, skills=skills)
                for lid, skills in self.states.items()
            ],
        )

    async def PredictItems(self, request: Any, context: Any) -> api.PredictItemsResponse:
        await self._enter("PredictItems", request.learner_id, context)
        return api.PredictItemsResponse(
            predictions=[
                api.ItemPrediction(item_id=i, p_correct=self.predictions.get(i, 0.3))
                for i in request.item_ids
            ]
        )


def catalog_records() -> list[Encoded]:
    out = []
    for skill_id, prerequisites in SKILLS:
        out.append(
            encode_catalog(
                catalog_pb2.CatalogRecord(
                    tenant_id=TEST_TENANT,
                    skill=catalog_pb2.Skill(
                        skill_id=skill_id, name=skill_id.title(), prerequisite_ids=prerequisites
                    ),
                )
            )
        )
        for suffix, difficulty, fmt, timed in (
            ("mid", 0.0, "multiple_choice", False),
            ("drill", 0.0, "timed_drill", True),
            ("open", 0.5, "open_response", False),
        ):
            out.append(
                encode_catalog(
                    catalog_pb2.CatalogRecord(
                        tenant_id=TEST_TENANT,
                        item=catalog_pb2.Item(
                            item_id=f"{skill_id}-{suffix}",
                            skill_ids=[skill_id],
                            difficulty=difficulty,
                            format=fmt,
                            timed=timed,
                        ),
                    )
                )
            )
        out.append(
            encode_catalog(
                catalog_pb2.CatalogRecord(
                    tenant_id=TEST_TENANT,
                    resource=catalog_pb2.Resource(
                        resource_id=f"{skill_id}-podcast",
                        skill_ids=[skill_id],
                        interest_tags=["music"],
                        modality="audio",
                        accessibility=["audio"],
                    ),
                )
            )
        )
    return out


def roster_records(pseudonym: Pseudonymizer) -> list[Encoded]:
    out = [
        encode_roster(
            roster_pb2.RosterRecord(
                tenant_id=TEST_TENANT,
                school_class=roster_pb2.SchoolClass(sourced_id="c1", school_id="school-1"),
            )
        )
    ]
    for n in range(1, 5):
        out.append(
            encode_roster(
                roster_pb2.RosterRecord(
                    tenant_id=TEST_TENANT,
                    enrollment=roster_pb2.Enrollment(
                        sourced_id=f"enr-{n}",
                        class_id="c1",
                        user_id=pseudonym.pseudonymize(TEST_TENANT, f"sis-{n}"),
                        role="learner",
                        school_id="school-1",
                    ),
                )
            )
        )
    return out


def produce(settings: Settings, topic: str, records: list[Encoded]) -> None:
    producer = create_producer(settings.kafka)
    try:
        name = settings.kafka.topics.name(topic)
        futures = [
            producer.send(name, key=r.key, value=r.value, headers=r.headers) for r in records
        ]
        for f in futures:
            f.get(timeout=30)
    finally:
        producer.close()


@dataclass
class Harness:
    stub: recommender_pb2_grpc.RecommenderServiceStub
    mastery: FakeMastery
    recommender: Recommender
    pseudonym: Pseudonymizer
    settings: Settings


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    pseudonym = Pseudonymizer(settings.pseudonym.all_keys())
    produce(settings, "catalog", catalog_records())
    produce(settings, "roster", roster_records(pseudonym))
    fake = FakeMastery()
    mastery_server = grpc.aio.server()
    mastery_pb2_grpc.add_MasteryServiceServicer_to_server(fake, mastery_server)
    mastery_port = mastery_server.add_insecure_port("127.0.0.1:0")
    await mastery_server.start()
    current = settings.model_copy(
        update={
            "auth": settings.auth.model_copy(update={"tokens": TOKENS}),
            "recommender": settings.recommender.model_copy(
                update={"mastery_address": f"127.0.0.1:{mastery_port}", "mastery_deadline_s": 0.5}
            ),
        }
    )
    recommender = Recommender(current, port=0)
    await recommender.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{recommender.server.port}") as channel:
            yield Harness(
                recommender_pb2_grpc.RecommenderServiceStub(channel),
                fake,
                recommender,
                pseudonym,
                current,
            )
    finally:
        await recommender.server.stop()
        await recommender.close()
        await mastery_server.stop(0)


async def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value.code()


def next_for(h: Harness, learner: str = "sis-1", token: str = "tool", k: int = 0) -> Any:
    return h.stub.NextActivities(
        rec.NextActivitiesRequest(tenant_id=TEST_TENANT, learner_id=learner, k=k),
        metadata=auth(token),
    )


async def test_serving_after_the_replica_is_loaded(harness: Harness) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{harness.recommender.server.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="trellis.recommender.v1.RecommenderService")
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    catalog = harness.recommender.replica.catalog(TEST_TENANT)
    assert set(catalog.skills) == {"count", "add", "multiply", "shapes"}
    assert len(harness.recommender.replica.roster.class_learners(TEST_TENANT, "c1")) == 4


async def test_next_activities_with_predictions_pins_and_accommodations(harness: Harness) -> None:
    h = harness
    h.mastery.states["sis-1"] = [
        skill_mastery("count", 0.97, MASTERED),
        skill_mastery("shapes", 0.97, MASTERED),
    ]
    h.mastery.profiles["sis-1"] = api.LearnerProfile(
        accommodations=["extended_time"],
        interests=["music"],
        pins=[api.Pin(activity_id="shapes-open", activity_kind="item", note="class project")],
    )
    h.mastery.predictions.update({"add-mid": 0.7, "add-drill": 0.72, "shapes-mid": 0.8})
    answer = await next_for(h)
    assert answer.recommendation_id and not answer.degraded
    assert answer.options[0].activity_id == "shapes-open"
    assert answer.options[0].reasons[0].code == "teacher_pin"
    ids = [o.activity_id for o in answer.options]
    assert "add-drill" not in ids and "add-mid" in ids
    add = next(o for o in answer.options if o.activity_id == "add-mid")
    assert {r.code for r in add.reasons} >= {"frontier", "target_band", "accommodation"}
    assert add.predicted_success == pytest.approx(0.7)
    assert add.explanation
    # the caller's token is forwarded to mastery (no token of the recommender's own configured)
    assert ("PredictItems", "sis-1", "Bearer tool") in h.mastery.calls
    again = await next_for(h)
    assert again.recommendation_id == answer.recommendation_id


async def test_predict_items_unimplemented_falls_back_to_the_estimate(harness: Harness) -> None:
    harness.mastery.fail["PredictItems"] = grpc.StatusCode.UNIMPLEMENTED
    harness.mastery.states["sis-1"] = [skill_mastery("count", 0.97, MASTERED)]
    answer = await next_for(harness)
    items = [o for o in answer.options if o.activity_kind == "item"]
    assert items and not answer.degraded
    for option in items:
        assert "estimated_success" in {r.code for r in option.reasons}


async def test_profile_unavailable_gives_a_degraded_conservative_answer(harness: Harness) -> None:
    harness.mastery.fail["GetLearnerProfile"] = grpc.StatusCode.UNIMPLEMENTED
    harness.mastery.states["sis-1"] = [skill_mastery("count", 0.97, MASTERED)]
    harness.mastery.predictions.update({"add-drill": 0.72, "add-mid": 0.7})
    answer = await next_for(harness, k=5)
    assert answer.degraded and "Degraded" in answer.explanation
    assert "add-drill" not in [o.activity_id for o in answer.options]


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL])
async def test_learner_state_unavailable_means_unavailable(
    harness: Harness, code: grpc.StatusCode
) -> None:
    harness.mastery.fail["GetLearnerMastery"] = code
    assert await code_of(next_for(harness)) == grpc.StatusCode.UNAVAILABLE


async def test_mastery_refusing_the_credentials_means_permission_denied(harness: Harness) -> None:
    harness.mastery.fail["GetLearnerMastery"] = grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(next_for(harness)) == grpc.StatusCode.PERMISSION_DENIED


async def test_a_slow_mastery_service_hits_the_deadline(harness: Harness) -> None:
    harness.mastery.delay_s = 2.0
    started = time.monotonic()
    assert await code_of(next_for(harness)) == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 1.5


async def test_scopes(harness: Harness) -> None:
    assert (await next_for(harness, token="teacher-c1")).explanation
    assert await code_of(next_for(harness, token="teacher-c2")) == grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(next_for(harness, "sis-2", "learner-1")) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert (await next_for(harness, "sis-1", "learner-1")).explanation
    assert await code_of(next_for(harness, token="nope")) == grpc.StatusCode.UNAUTHENTICATED
    assert (await next_for(harness, token="admin-school-1")).explanation
    assert await code_of(next_for(harness, token="admin-school-2")) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert await code_of(next_for(harness, token="other-tenant")) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert await code_of(next_for(harness, k=50)) == grpc.StatusCode.INVALID_ARGUMENT
    # A learning tool scoped to schools is scoped like a district admin.
    assert (await next_for(harness, token="tool-school-1")).explanation
    assert await code_of(next_for(harness, token="tool-school-2")) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # A learner the roster does not enrol is outside every class- or school-scoped caller.
    for token in ("teacher-c1", "admin-school-1", "tool-school-1"):
        assert await code_of(next_for(harness, "sis-9", token)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    assert (await next_for(harness, "sis-9", "tool")).explanation


async def test_group_learners_scopes(harness: Harness) -> None:
    def group(token: str, class_id: str = "c1") -> Any:
        return harness.stub.GroupLearners(
            rec.GroupLearnersRequest(
                tenant_id=TEST_TENANT, class_id=class_id, purpose=rec.GROUPING_PURPOSE_NEED
            ),
            metadata=auth(token),
        )

    for token in ("tool", "teacher-c1", "admin-school-1", "tool-school-1"):
        await group(token)
    # Never a learner (not even of the class); schools other than the class's; classes the
    # roster does not place (their school is unknown) for callers scoped to schools.
    for token, class_id in [
        ("learner-1-in-c1", "c1"),
        ("learner-1", "c1"),
        ("teacher-c2", "c1"),
        ("admin-school-2", "c1"),
        ("tool-school-2", "c1"),
        ("admin-school-1", "c-unknown"),
        ("tool-school-1", "c-unknown"),
        ("other-tenant", "c1"),
    ]:
        assert await code_of(group(token, class_id)) == grpc.StatusCode.PERMISSION_DENIED, token


async def test_learning_path(harness: Harness) -> None:
    harness.mastery.states["sis-1"] = [skill_mastery("count", 0.97, MASTERED)]
    answer = await harness.stub.LearningPath(
        rec.LearningPathRequest(
            tenant_id=TEST_TENANT, learner_id="sis-1", goal_skill_id="multiply"
        ),
        metadata=auth("tool"),
    )
    assert [s.skill_id for s in answer.steps] == ["add", "multiply"]
    unknown = harness.stub.LearningPath(
        rec.LearningPathRequest(tenant_id=TEST_TENANT, learner_id="sis-1", goal_skill_id="nope"),
        metadata=auth("tool"),
    )
    assert await code_of(unknown) == grpc.StatusCode.NOT_FOUND


async def test_group_learners_by_need_from_the_roster_replica(harness: Harness) -> None:
    h = harness
    for n in range(1, 5):
        pseudonym = h.pseudonym.pseudonymize(TEST_TENANT, f"sis-{n}")
        h.mastery.states[pseudonym] = [
            skill_mastery("count", 0.97, MASTERED),
            skill_mastery("shapes", 0.97, MASTERED),
        ]
    answer = await h.stub.GroupLearners(
        rec.GroupLearnersRequest(
            tenant_id=TEST_TENANT, class_id="c1", purpose=rec.GROUPING_PURPOSE_NEED
        ),
        metadata=auth("teacher-c1"),
    )
    assert len(answer.groups) == 1 and answer.groups[0].binding == "add"
    assert len(answer.groups[0].learner_ids) == 4 and not answer.unplaced_learner_ids
    assert answer.groups[0].suggested_activity_id == "add-podcast"
    denied = h.stub.GroupLearners(
        rec.GroupLearnersRequest(
            tenant_id=TEST_TENANT, class_id="c1", purpose=rec.GROUPING_PURPOSE_NEED
        ),
        metadata=auth("teacher-c2"),
    )
    assert await code_of(denied) == grpc.StatusCode.PERMISSION_DENIED
    h.mastery.fail["GetClassMastery"] = grpc.StatusCode.UNIMPLEMENTED
    failing = h.stub.GroupLearners(
        rec.GroupLearnersRequest(
            tenant_id=TEST_TENANT, class_id="c1", purpose=rec.GROUPING_PURPOSE_MIXED
        ),
        metadata=auth("tool"),
    )
    assert await code_of(failing) == grpc.StatusCode.UNAVAILABLE


async def test_the_catalog_is_followed_after_start(harness: Harness) -> None:
    record = catalog_pb2.CatalogRecord(
        tenant_id=TEST_TENANT,
        skill=catalog_pb2.Skill(skill_id="divide", prerequisite_ids=["multiply"]),
    )
    await asyncio.to_thread(produce, harness.settings, "catalog", [encode_catalog(record)])
    deadline = time.monotonic() + 15
    while "divide" not in harness.recommender.replica.catalog(TEST_TENANT).skills:
        assert time.monotonic() < deadline, "the new skill never reached the replica"
        await asyncio.sleep(0.1)
    answer = await harness.stub.LearningPath(
        rec.LearningPathRequest(tenant_id=TEST_TENANT, learner_id="sis-1", goal_skill_id="divide"),
        metadata=auth("tool"),
    )
    assert [s.skill_id for s in answer.steps][-2:] == ["multiply", "divide"]
