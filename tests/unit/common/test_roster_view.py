"""The shared roster view: class schools, learners' enrollments both ways (class -> learners,
learner -> classes), and the topic's tombstones through the applier."""

from __future__ import annotations

from trellis.common.codec import encode_roster
from trellis.common.pb.events.v1 import roster_pb2
from trellis.common.roster import RosterView, roster_applier

TENANT = "t1"


def enrollment(
    sourced_id: str, class_id: str, user_id: str, role: str = "learner", tenant: str = TENANT
) -> roster_pb2.RosterRecord:
    return roster_pb2.RosterRecord(
        tenant_id=tenant,
        enrollment=roster_pb2.Enrollment(
            sourced_id=sourced_id, class_id=class_id, user_id=user_id, role=role
        ),
    )


def school_class(class_id: str, school_id: str, tenant: str = TENANT) -> roster_pb2.RosterRecord:
    return roster_pb2.RosterRecord(
        tenant_id=tenant,
        school_class=roster_pb2.SchoolClass(sourced_id=class_id, school_id=school_id),
    )


def test_learners_enrollments_are_indexed_both_ways() -> None:
    view = RosterView()
    view.apply(enrollment("e1", "c1", "p2"))
    view.apply(enrollment("e2", "c1", "p1"))
    view.apply(enrollment("e3", "c2", "p1"))
    view.apply(enrollment("e4", "c1", "staff", role="teacher"))
    view.apply(enrollment("e5", "c1", "p9", tenant="other"))
    assert view.class_learners(TENANT, "c1") == ["p1", "p2"]
    assert view.learner_classes(TENANT, "p1") == ["c1", "c2"]
    assert view.enrolled(TENANT, "c2", "p1") and not view.enrolled(TENANT, "c1", "staff")
    assert view.class_learners("other", "c1") == ["p9"]
    assert view.class_learners(TENANT, "unknown") == [] and view.learner_classes(TENANT, "p9") == []


def test_a_moved_or_ended_enrollment_changes_membership_and_the_last_one_ends_it() -> None:
    view = RosterView()
    view.apply(enrollment("e1", "c1", "p1"))
    view.apply(enrollment("e2", "c1", "p1"))  # two records for the same pair
    view.apply(enrollment("e1", "c2", "p1"))  # e1 moves to c2; e2 still enrols p1 in c1
    assert view.learner_classes(TENANT, "p1") == ["c1", "c2"]
    view.remove(TENANT, "enrollment", "e2")
    assert view.learner_classes(TENANT, "p1") == ["c2"] and view.class_learners(TENANT, "c1") == []
    view.apply(enrollment("e1", "c2", "p1", role="teacher"))  # no longer a learner's
    assert view.learner_classes(TENANT, "p1") == [] and not view.enrolled(TENANT, "c2", "p1")
    view.remove(TENANT, "enrollment", "unknown")


def test_the_class_a_learners_enrollment_names_now() -> None:
    view = RosterView()
    view.apply(enrollment("e1", "c1", "p1"))
    assert view.enrollment_class(TENANT, "e1") == "c1"
    view.apply(enrollment("e1", "c2", "p1"))
    assert view.enrollment_class(TENANT, "e1") == "c2"
    assert view.enrollment_class("other", "e1") is None
    view.apply(enrollment("e1", "c2", "p1", role="teacher"))  # staff enrollments are not kept
    assert view.enrollment_class(TENANT, "e1") is None
    view.apply(enrollment("e2", "c3", "p1"))
    view.remove(TENANT, "enrollment", "e2")
    assert view.enrollment_class(TENANT, "e2") is None


def test_the_applier_follows_records_and_tombstones() -> None:
    view = RosterView()
    apply = roster_applier(view)
    for record in (enrollment("e1", "c1", "p1"), school_class("c1", "s1")):
        encoded = encode_roster(record)
        apply(encoded.key, encoded.value, encoded.headers)
    assert view.class_learners(TENANT, "c1") == ["p1"] and view.school_of(TENANT, "c1") == "s1"
    apply(f"{TENANT}/enrollment/e1".encode(), None, [])
    apply(f"{TENANT}/school_class/c1".encode(), None, [])
    apply(b"not-a-roster-key", None, [])
    assert view.class_learners(TENANT, "c1") == [] and view.school_of(TENANT, "c1") is None
