"""The learners a caller scoped to schools may write about (trellis.ingest.scope): pure rules on
plain roster data."""

from __future__ import annotations

import pytest

from trellis.common.pb.events.v1 import envelope_pb2
from trellis.ingest.scope import (
    ERASURE_OUT_OF_SCOPE,
    LEARNER_OUT_OF_SCOPE,
    UNKNOWN_LEARNER,
    OutOfScope,
    Reach,
    learner_warnings,
    reach,
)
from trellis.ingest.validation import Violation

# The roster: class -> school (c-none is placed nowhere), learner -> classes.
SCHOOL_OF = {"c-a": "sch-a", "c-b": "sch-b"}
CLASSES_OF = {
    "in-a": ["c-a"],
    "in-b": ["c-b"],
    "in-both": ["c-b", "c-a"],
    "unplaced": ["c-none"],
}
SCHOOLS = ["sch-a"]


def school_of(class_id: str) -> str | None:
    return SCHOOL_OF.get(class_id)


def event(learner: str, erasure: bool = False) -> envelope_pb2.Envelope:
    # The event names the caller's school (checked before): only its learner is in question.
    envelope = envelope_pb2.Envelope(event_id=f"e-{learner}", learner_id=learner, school_id="sch-a")
    if erasure:
        envelope.learner_erasure_requested.SetInParent()
    else:
        envelope.item_attempted.item_id = "item-1"
    return envelope


def warnings_for(*events: envelope_pb2.Envelope, first_index: int = 0) -> dict[int, Violation]:
    return learner_warnings(
        events, first_index, SCHOOLS, lambda learner: CLASSES_OF.get(learner, []), school_of
    )


def test_reach_by_the_schools_of_the_learners_classes() -> None:
    def of(learner: str) -> Reach:
        return reach(CLASSES_OF.get(learner, []), school_of, SCHOOLS)

    assert of("in-a") is Reach.ONLY_IN_SCHOOLS
    assert of("in-both") is Reach.IN_SCHOOLS
    assert of("in-b") is Reach.ELSEWHERE
    assert of("unplaced") is Reach.ELSEWHERE  # a class placed nowhere is in none of them
    assert of("stranger") is Reach.UNKNOWN


def test_activity_about_a_learner_of_the_callers_schools_is_accepted() -> None:
    assert warnings_for(event("in-a"), event("in-both")) == {}


@pytest.mark.parametrize("learner", ["in-b", "unplaced"])
def test_activity_about_a_learner_enrolled_only_elsewhere_denies_the_batch(learner: str) -> None:
    with pytest.raises(OutOfScope) as denied:
        warnings_for(event("in-a"), event(learner), first_index=5)
    assert denied.value.path == "events[6].learner_id"
    assert str(denied.value) == f"events[6].learner_id: {LEARNER_OUT_OF_SCOPE}"


def test_activity_about_a_learner_the_roster_does_not_enrol_is_accepted_with_a_warning() -> None:
    assert warnings_for(event("in-a"), event("stranger"), first_index=3) == {
        4: Violation("events[4].learner_id", UNKNOWN_LEARNER)
    }


def test_an_erasure_needs_a_learner_only_of_the_callers_schools() -> None:
    assert warnings_for(event("in-a", erasure=True)) == {}
    # "in-both": also enrolled in another school (as a caller could make any learner by
    # enrolling them in a class of its own); an unknown learner too.
    for learner in ("in-both", "in-b", "unplaced", "stranger"):
        with pytest.raises(OutOfScope) as denied:
            warnings_for(event("in-a"), event(learner, erasure=True))
        assert str(denied.value) == f"events[1].learner_id: {ERASURE_OUT_OF_SCOPE}"


def test_an_event_without_a_learner_is_left_to_validation() -> None:
    assert warnings_for(event(""), event("", erasure=True)) == {}
