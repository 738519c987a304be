"""The learners a caller scoped to schools may write about, in events and roster records
(trellis.ingest.scope): pure rules on plain roster data."""

from __future__ import annotations

import pytest

from trellis.common.pb.events.v1 import envelope_pb2, roster_pb2
from trellis.ingest.scope import (
    ERASURE_OUT_OF_SCOPE,
    LEARNER_OUT_OF_SCOPE,
    ROSTER_LEARNER_OUT_OF_SCOPE,
    UNKNOWN_LEARNER,
    OutOfScope,
    Reach,
    check_roster_learners,
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
    "record-a-in-b": ["c-b"],
}
SCHOOLS = ["sch-a"]


def class_schools(learner: str) -> list[str | None]:
    return [SCHOOL_OF.get(class_id) for class_id in CLASSES_OF.get(learner, [])]


def event(learner: str, erasure: bool = False) -> envelope_pb2.Envelope:
    # The event names the caller's school (checked before): only its learner is in question.
    envelope = envelope_pb2.Envelope(event_id=f"e-{learner}", learner_id=learner, school_id="sch-a")
    if erasure:
        envelope.learner_erasure_requested.SetInParent()
    else:
        envelope.item_attempted.item_id = "item-1"
    return envelope


def warnings_for(*events: envelope_pb2.Envelope, first_index: int = 0) -> dict[int, Violation]:
    return learner_warnings(events, first_index, SCHOOLS, class_schools)


def test_reach_by_the_schools_of_the_learners_classes() -> None:
    def of(learner: str) -> Reach:
        return reach(class_schools(learner), SCHOOLS)

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


# Learner records stored by the roster: learner -> school (beside CLASSES_OF's enrollments).
RECORD_SCHOOL = {"record-a": "sch-a", "record-b": "sch-b", "record-a-in-b": "sch-a"}


def learner_places(learner: str) -> list[str | None]:
    record = RECORD_SCHOOL.get(learner)
    return class_schools(learner) + ([] if record is None else [record])


def enrol(learner: str, role: str = "learner") -> roster_pb2.RosterRecord:
    # Into a class of the caller's school (checked before): only its learner is in question.
    return roster_pb2.RosterRecord(
        enrollment=roster_pb2.Enrollment(
            sourced_id=f"en-{learner}", class_id="c-a", user_id=learner, role=role
        )
    )


def learner_record(learner: str) -> roster_pb2.RosterRecord:
    return roster_pb2.RosterRecord(
        learner=roster_pb2.Learner(sourced_id=learner, school_id="sch-a")
    )


def check(*records: roster_pb2.RosterRecord) -> None:
    check_roster_learners(records, SCHOOLS, learner_places)


@pytest.mark.parametrize("learner", ["in-b", "unplaced", "record-b"])
def test_enrolling_a_learner_the_roster_places_only_elsewhere_denies_the_batch(
    learner: str,
) -> None:
    # Enrolled only in another school's class, or in a class placed nowhere, or known only by a
    # learner record of another school: a class of the caller's would bring them into its scope.
    with pytest.raises(OutOfScope) as denied:
        check(enrol("in-a"), enrol(learner))
    assert str(denied.value) == f"records[1].enrollment.user_id: {ROSTER_LEARNER_OUT_OF_SCOPE}"


@pytest.mark.parametrize("learner", ["in-a", "in-both", "record-a", "record-a-in-b", "stranger"])
def test_enrolling_a_learner_of_the_callers_schools_or_a_new_one_is_allowed(learner: str) -> None:
    # Also one enrolled in two schools, or enrolled elsewhere with a record of the caller's school;
    # a learner the roster holds nothing of is new.
    check(enrol(learner), learner_record(learner))


def test_a_learner_record_of_a_learner_placed_only_elsewhere_is_denied() -> None:
    # Without a stored record the learner is still placed by their classes: a record naming the
    # caller's school would count as a place of theirs.
    with pytest.raises(OutOfScope) as denied:
        check(learner_record("in-b"))
    assert str(denied.value) == f"records[0].learner.sourced_id: {ROSTER_LEARNER_OUT_OF_SCOPE}"


def test_the_batchs_own_learner_record_does_not_place_the_learner() -> None:
    with pytest.raises(OutOfScope) as denied:
        check(learner_record("new"), enrol("in-b"), learner_record("in-b"))
    assert denied.value.path == "records[1].enrollment.user_id"


def test_staff_enrollments_and_other_records_are_not_about_learners() -> None:
    # A teacher's enrollment gives no scope over learners (the roster keeps learners' only).
    school = roster_pb2.RosterRecord(school_class=roster_pb2.SchoolClass(sourced_id="c-a"))
    check(enrol("in-b", role="teacher"), school, enrol(""), learner_record(""))
