"""Mastery use cases on the in-memory store: apply, dedupe, skip, refuse, read."""

from __future__ import annotations

import pytest

from trellis.common.codec import learner_key
from trellis.common.pb.events.v1 import activity_pb2, catalog_pb2, envelope_pb2
from trellis.mastery.adapters.memory_store import InMemoryLearnerStore
from trellis.mastery.catalog import CatalogView
from trellis.mastery.domain import DEFAULT, BktParameters, Level
from trellis.mastery.events import InvalidEvent, output_event_id
from trellis.mastery.service import MasteryService, NotOwned

KEY = learner_key("district-a", "pseudo-1")


def attempt(
    event_id: str = "evt-1", skills: tuple[str, ...] = ("a",), correct: bool = True
) -> envelope_pb2.Envelope:
    envelope = envelope_pb2.Envelope(
        event_id=event_id,
        tenant_id="district-a",
        learner_id="pseudo-1",
        item_attempted=activity_pb2.ItemAttempted(skill_ids=skills, correct=correct),
    )
    envelope.occurred_at.FromSeconds(1_790_000_000)
    return envelope


@pytest.fixture
def store() -> InMemoryLearnerStore:
    return InMemoryLearnerStore()


@pytest.fixture
def service(store: InMemoryLearnerStore) -> MasteryService:
    return MasteryService(store)


def test_an_attempt_updates_state_and_yields_outputs(
    service: MasteryService, store: InMemoryLearnerStore
) -> None:
    handled = service.record_activity(KEY, attempt())
    assert not handled.duplicate and handled.skipped is None
    [output] = handled.outputs
    assert output.mastery_updated.p_after == pytest.approx(0.6926829268)
    assert store.states[KEY].skills["a"].attempts == 1
    assert store.writes == 1


def test_a_duplicate_writes_nothing_and_repeats_the_outputs(
    service: MasteryService, store: InMemoryLearnerStore
) -> None:
    first = service.record_activity(KEY, attempt())
    again = service.record_activity(KEY, attempt())
    assert again.duplicate
    assert again.outputs == first.outputs
    assert store.writes == 1
    assert store.states[KEY].skills["a"].attempts == 1


def test_other_payloads_are_skipped(service: MasteryService, store: InMemoryLearnerStore) -> None:
    seen = envelope_pb2.Envelope(event_id="r", tenant_id="district-a", learner_id="pseudo-1")
    seen.resource_engaged.resource_id = "video-1"
    assert service.record_activity(KEY, seen).skipped == "payload resource_engaged is not handled"
    assert service.record_activity(KEY, envelope_pb2.Envelope()).skipped is not None
    assert store.writes == 0


def test_an_attempt_without_skills_of_an_item_the_catalog_does_not_know_is_skipped(
    service: MasteryService, store: InMemoryLearnerStore
) -> None:
    handled = service.record_activity(KEY, attempt(skills=()))
    assert handled.skipped == "item_attempted without skill_ids, item not in catalog"
    assert handled.outputs == () and store.writes == 0


def test_the_catalog_gives_skills_thresholds_and_the_active_parameter_set(
    store: InMemoryLearnerStore,
) -> None:
    catalog = CatalogView()
    for record in [
        catalog_pb2.CatalogRecord(
            tenant_id="district-a", item=catalog_pb2.Item(item_id="q1", skill_ids=["a", "b"])
        ),
        catalog_pb2.CatalogRecord(
            tenant_id="district-a", skill=catalog_pb2.Skill(skill_id="b", mastery_threshold=0.6)
        ),
        catalog_pb2.CatalogRecord(
            tenant_id="district-a",
            model_parameters=catalog_pb2.ModelParameters(
                version="fit-1",
                skills=[
                    catalog_pb2.SkillParameters(
                        skill_id="a", prior=0.5, learn=0.2, guess=0.25, slip=0.05
                    )
                ],
            ),
        ),
    ]:
        catalog.apply(record)
    service = MasteryService(store, catalog=catalog)
    envelope = attempt(skills=())
    envelope.item_attempted.item_id = "q1"
    outputs = service.record_activity(KEY, envelope).outputs
    kinds = [
        (o.WhichOneof("payload"), getattr(o, o.WhichOneof("payload")).skill_id) for o in outputs
    ]
    assert kinds == [("mastery_updated", "a"), ("mastery_updated", "b"), ("skill_mastered", "b")]
    # a: fitted (0.5, 0.2, 0.25, 0.05): posterior 0.475/0.6 = 19/24, after 5/6.
    assert outputs[0].mastery_updated.p_after == pytest.approx(5 / 6, abs=1e-15)
    assert outputs[0].mastery_updated.model_version == "fit-1"
    # b: defaults under the set's version, 142/205 = 0.69 >= b's own threshold 0.6.
    assert outputs[1].mastery_updated.p_after == pytest.approx(142 / 205, abs=1e-15)
    assert outputs[1].mastery_updated.model_version == "fit-1"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.ClearField("event_id"), "no event_id"),
        (lambda e: e.ClearField("learner_id"), "no tenant_id or learner_id"),
        (lambda e: setattr(e, "learner_id", "someone-else"), "message key"),
    ],
)
def test_events_that_cannot_be_applied_are_refused(
    service: MasteryService, mutate: object, reason: str
) -> None:
    envelope = attempt()
    mutate(envelope)  # type: ignore[operator]
    with pytest.raises(InvalidEvent, match=reason):
        service.record_activity(KEY, envelope)


def test_reading_mastery(store: InMemoryLearnerStore) -> None:
    fitted = BktParameters(prior=0.5, version="fitted-v2")
    service = MasteryService(store, lambda skill: fitted if skill == "c" else BktParameters())
    service.record_activity(KEY, attempt(skills=("a", "b")))

    everything = service.mastery_of("district-a", "pseudo-1")
    assert sorted(everything) == ["a", "b"]
    asked = service.mastery_of("district-a", "pseudo-1", ["b", "c", "b"])
    assert list(asked) == ["b", "c"]
    assert asked["b"].attempts == 1
    assert (asked["c"].p_mastered, asked["c"].level, asked["c"].model_version) == (
        0.5, Level.NOT_STARTED, "fitted-v2",
    )  # fmt: skip
    assert service.mastery_of("district-a", "nobody") == {}


def test_reading_a_learner_held_elsewhere_says_so(store: InMemoryLearnerStore) -> None:
    store.owns = lambda key: False  # type: ignore[method-assign]
    with pytest.raises(NotOwned):
        MasteryService(store).mastery_of("district-a", "pseudo-1")


def test_a_teacher_override_is_applied_and_audited(
    service: MasteryService, store: InMemoryLearnerStore
) -> None:
    envelope = envelope_pb2.Envelope(
        event_id="ovr-1",
        tenant_id="district-a",
        learner_id="pseudo-1",
        source=envelope_pb2.Source(actor=envelope_pb2.Source.Actor.ACTOR_TEACHER, actor_id="t-9"),
        teacher_override=activity_pb2.TeacherOverride(
            skill_id="a", p_mastered=0.97, reason="portfolio"
        ),
    )
    envelope.occurred_at.FromSeconds(1_790_000_000)
    handled = service.record_activity(KEY, envelope)
    kinds = [o.WhichOneof("payload") for o in handled.outputs]
    assert kinds == ["mastery_overridden", "skill_mastered"]
    overridden = handled.outputs[0].mastery_overridden
    assert (overridden.teacher_id, overridden.reason, overridden.p_after) == (
        "t-9",
        "portfolio",
        0.97,
    )
    assert overridden.p_before == pytest.approx(0.3)
    assert store.states[KEY].skills["a"].override is not None


def test_a_review_tick_emits_review_due_for_decayed_skills(store: InMemoryLearnerStore) -> None:
    decaying = BktParameters(prior=0.94, forget=0.1)
    service = MasteryService(store, lambda _: decaying)
    service.record_activity(KEY, attempt())
    tick = envelope_pb2.Envelope(
        event_id="tick-1",
        tenant_id="district-a",
        learner_id="pseudo-1",
        review_tick=activity_pb2.ReviewTick(),
    )
    tick.occurred_at.FromSeconds(1_790_000_000 + 2 * 86_400)
    [output] = service.record_activity(KEY, tick).outputs
    assert output.review_due.skill_id == "a"
    assert output.review_due.p_recall == pytest.approx(0.799804195804, abs=1e-12)
    assert output.review_due.cause_event_id == "tick-1"


def envelope_at(event_id: str, seconds: int, class_id: str = "") -> envelope_pb2.Envelope:
    envelope = envelope_pb2.Envelope(
        event_id=event_id, tenant_id="district-a", learner_id="pseudo-1", class_id=class_id
    )
    envelope.occurred_at.FromSeconds(seconds)
    return envelope


def test_profile_events_build_the_profile_and_classes(
    service: MasteryService, store: InMemoryLearnerStore
) -> None:
    goal = envelope_at("g1", 1_790_000_000, "7a")
    goal.goal_set.CopyFrom(activity_pb2.GoalSet(skill_id="a", description="Add"))  # no goal id
    interests = envelope_at("i1", 1_790_000_001)
    interests.interest_declared.tags.extend(["space", "music"])
    pin = envelope_at("p1", 1_790_000_002, "7b")
    pin.activity_assigned.CopyFrom(
        activity_pb2.ActivityAssigned(activity_id="item-1", activity_kind="item", skill_id="a")
    )
    preference = envelope_at("m1", 1_790_000_003)
    preference.preference_set.modality = "video"
    for envelope in (goal, interests, pin, preference):
        handled = service.record_activity(KEY, envelope)
        assert handled.outputs == () and handled.skipped is None and not handled.duplicate
    assert service.record_activity(KEY, pin).duplicate

    profile, classes = service.profile_of("district-a", "pseudo-1")
    assert [(g.goal_id, g.skill_id, g.description) for g in profile.goals] == [("g1", "a", "Add")]
    assert profile.interests == ("space", "music")
    assert [(p.activity_id, p.activity_kind) for p in profile.pins] == [("item-1", "item")]
    assert (profile.modality, profile.pace) == ("video", "")
    assert classes == ("7a", "7b")
    assert store.writes == 4


def test_a_pin_without_an_activity_is_refused(service: MasteryService) -> None:
    pin = envelope_at("p1", 1_790_000_000)
    pin.activity_assigned.note = "nothing named"
    with pytest.raises(InvalidEvent, match="activity_id"):
        service.record_activity(KEY, pin)


def erasure(event_id: str, seconds: int) -> envelope_pb2.Envelope:
    envelope = envelope_at(event_id, seconds)
    envelope.learner_erasure_requested.reason = "parent request"
    return envelope


def test_erasure_deletes_the_state_and_announces_it_under_a_deterministic_id(
    service: MasteryService, store: InMemoryLearnerStore
) -> None:
    service.record_activity(KEY, attempt())  # at 1_790_000_000
    [erased] = service.record_activity(KEY, erasure("erase-1", 1_790_000_100)).outputs
    assert erased.learner_erased.cause_event_id == "erase-1"
    # uuid5(uuid5(NAMESPACE_URL, "urn:trellis:events:v1:mastery"), "erase-1\x1flearner_erased\x1f")
    assert erased.event_id == "c9fab526-2570-5fb6-845d-f20120a628ed"
    assert erased.event_id == output_event_id("erase-1", "learner_erased", "")
    assert (erased.tenant_id, erased.learner_id) == ("district-a", "pseudo-1")
    assert KEY not in store.states
    assert service.mastery_of("district-a", "pseudo-1") == {}

    # Re-read: the same announcement again, nothing written.
    writes = store.writes
    again = service.record_activity(KEY, erasure("erase-1", 1_790_000_100))
    assert again.duplicate and again.outputs == (erased,)
    assert store.writes == writes


def test_events_from_before_the_erasure_stay_erased_later_ones_start_afresh(
    service: MasteryService, store: InMemoryLearnerStore
) -> None:
    service.record_activity(KEY, attempt())  # at 1_790_000_000
    service.record_activity(KEY, erasure("erase-1", 1_790_000_100))
    # The erased learner's old attempt re-sent, and a late one from before the request.
    assert service.record_activity(KEY, attempt()).skipped == "learner erased"
    late = attempt("evt-late")
    late.occurred_at.FromSeconds(1_790_000_100)
    assert service.record_activity(KEY, late).skipped == "learner erased"
    assert KEY not in store.states

    after = attempt("evt-after")
    after.occurred_at.FromSeconds(1_790_000_101)
    [update] = service.record_activity(KEY, after).outputs
    assert update.mastery_updated.p_before == pytest.approx(0.3)
    assert update.mastery_updated.attempts == 1
    assert store.states[KEY].erased_before == store.erased[KEY]
    # With a new state begun, the old attempt and the old request still change nothing.
    assert service.record_activity(KEY, attempt()).skipped == "learner erased"
    again = service.record_activity(KEY, erasure("erase-1", 1_790_000_100))
    assert again.duplicate and again.outputs[0].learner_erased.cause_event_id == "erase-1"
    assert store.states[KEY].skills["a"].attempts == 1
    # A second request erases the new state too, and keeps the later time.
    service.record_activity(KEY, erasure("erase-2", 1_790_000_200))
    assert KEY not in store.states
    assert store.erased[KEY].timestamp() == 1_790_000_200


def test_class_mastery_answers_for_the_learners_it_is_given(
    store: InMemoryLearnerStore,
) -> None:
    service = MasteryService(store)
    for learner, class_id, correct in [("p1", "7a", True), ("p2", "7a", False), ("p3", "7b", True)]:
        envelope = attempt(f"evt-{learner}", correct=correct)
        envelope.learner_id, envelope.class_id = learner, class_id
        service.record_activity(learner_key("district-a", learner), envelope)
    other_tenant = attempt("evt-x")
    other_tenant.tenant_id, other_tenant.class_id = "district-b", "7a"
    service.record_activity(learner_key("district-b", "pseudo-1"), other_tenant)

    # The members come from the roster: p3's events named 7b, p4 has none; the class a
    # learner's events named does not matter.
    found = service.class_mastery("district-a", ["p2", "p1", "p3", "p4"])
    assert list(found) == ["p1", "p2", "p3", "p4"]
    assert found["p1"]["a"].p_mastered == pytest.approx(142 / 205, abs=1e-15)
    # wrong from 0.3: 0.03/0.59 = 3/59, then + (56/59) 0.1 = 8.6/59
    assert found["p2"]["a"].p_mastered == pytest.approx(8.6 / 59, abs=1e-15)
    assert found["p4"] == {}  # no state yet: no skills
    asked = service.class_mastery("district-a", ["p1", "p4"], ["z", "a"])
    assert asked["p1"]["z"].attempts == 0 and asked["p4"]["a"].attempts == 0
    assert asked["p4"]["a"].p_mastered == DEFAULT.prior  # not started: at the prior
    assert asked["p4"]["a"].level == Level.NOT_STARTED
    assert list(
        service.class_mastery("district-a", ["p1", "p2"], include=lambda k: k.endswith(b"2"))
    ) == ["p2"]
    assert service.class_mastery("district-a", []) == {}


def test_class_mastery_needs_every_partition(store: InMemoryLearnerStore) -> None:
    store.owns_all = lambda: False  # type: ignore[method-assign]
    with pytest.raises(NotOwned):
        MasteryService(store).class_mastery("district-a", ["p1"])
