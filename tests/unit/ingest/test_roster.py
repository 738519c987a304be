"""The servicer's rules built on the roster view (the view itself: tests/unit/common/
test_roster_view.py; the pure rules of callers scoped to schools: test_scope.py): who writes about
which learners, which schools' roster, the catalog, and erasure requests."""

from __future__ import annotations

from functools import partial

import grpc
import pytest
from pydantic import SecretStr

from tests.unit.common import test_roster_view as roster_records
from tests.unit.ingest import test_service
from tests.unit.ingest.test_properties import TENANT, MemoryPublisher, call_as, valid_event
from trellis.common.grpc.errors import PermissionDenied
from trellis.common.pb.events.v1 import catalog_pb2, envelope_pb2, roster_pb2
from trellis.common.pb.ingest.v1 import ingest_pb2
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.settings import Principal
from trellis.ingest.adapters.grpc import IngestServicer
from trellis.ingest.catalog import CatalogView
from trellis.ingest.dedup import DedupWindow
from trellis.ingest.roster import RosterView
from trellis.ingest.scope import (
    ERASURE_OUT_OF_SCOPE,
    LEARNER_OUT_OF_SCOPE,
    ROSTER_LEARNER_OUT_OF_SCOPE,
    UNKNOWN_LEARNER,
)
from trellis.ingest.service import IngestService, Publish

PSEUDONYMS = Pseudonymizer({TENANT: {1: SecretStr("k")}})


# The shared roster view's record builders, in this module's tenant.
enrollment = partial(roster_records.enrollment, tenant=TENANT)
school_class = partial(roster_records.school_class, tenant=TENANT)


def servicer_with(view: RosterView, publish: Publish | None = None) -> IngestServicer:
    service = IngestService(
        publish or MemoryPublisher(), PSEUDONYMS, DedupWindow(1_000), CatalogView(), roster=view
    )
    return IngestServicer(service, max_batch_size=5, max_in_flight=2)


TEACHER = Principal(tenant_id=TENANT, role="teacher", schools=["s1"], classes=["c1"])


def test_a_teacher_writes_only_about_learners_enrolled_in_the_class() -> None:
    view = RosterView()
    servicer = servicer_with(view)
    request = ingest_pb2.RecordEventsRequest(tenant_id=TENANT, events=[valid_event()])
    with pytest.raises(PermissionDenied):
        call_as(TEACHER, servicer.RecordEvents, request)
    # Services are trusted feeds: the roster does not limit them.
    reply = call_as(Principal(tenant_id=TENANT), servicer.RecordEvents, request)
    assert [r.status for r in reply.results] == [ingest_pb2.ITEM_STATUS_ACCEPTED]

    view.apply(enrollment("e1", "c1", PSEUDONYMS.pseudonymize(TENANT, "sis-1")))
    event = valid_event()
    event.event_id = "e2"
    request = ingest_pb2.RecordEventsRequest(tenant_id=TENANT, events=[event])
    reply = call_as(TEACHER, servicer.RecordEvents, request)
    assert [r.status for r in reply.results] == [ingest_pb2.ITEM_STATUS_ACCEPTED]
    view.remove(TENANT, "enrollment", "e1")
    with pytest.raises(PermissionDenied) as denied:
        call_as(TEACHER, servicer.RecordEvents, request)
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_a_teachers_stream_is_checked_per_event() -> None:
    servicer = servicer_with(RosterView())

    async def consume() -> None:
        async def events():  # type: ignore[no-untyped-def]
            yield valid_event()

        async for _ in servicer.StreamEvents(events(), None):  # type: ignore[arg-type]
            pass

    with pytest.raises(PermissionDenied):
        call_as(TEACHER, lambda _r, _c: consume(), None)


def test_the_schools_a_roster_record_writes_into() -> None:
    view = RosterView()
    view.apply(school_class("c1", "s1"))
    moved = school_class("c1", "s2")
    into_c1 = enrollment("e1", "c1", "p1")
    into_c1.enrollment.school_id = "s2"
    assert view.schools_named(TENANT, moved, str) == {"s1", "s2"}  # out of s1, into s2
    assert view.schools_named(TENANT, into_c1, str) == {"s1", "s2"}
    assert view.schools_named(TENANT, school_class("c9", "s3"), str) == {"s3"}
    # An enrollment replaces the stored one of its id: out of that one's class (in s1).
    view.apply(enrollment("e1", "c1", "p1"))
    into_c9 = enrollment("e1", "c9", "p1")
    into_c9.enrollment.school_id = "s3"
    assert view.schools_named(TENANT, into_c9, str) == {"s1", "s3"}
    assert view.schools_named(
        TENANT, roster_pb2.RosterRecord(org=roster_pb2.Org(sourced_id="s4")), str
    ) == {"s4"}
    assert view.schools_named(
        TENANT, roster_pb2.RosterRecord(learner=roster_pb2.Learner(sourced_id="x")), str
    ) == {""}


SCHOOL_ADMIN = Principal(tenant_id=TENANT, role="district_admin", schools=["s1"])


def test_callers_scoped_to_schools_write_the_roster_of_their_schools_only() -> None:
    view = RosterView()
    view.apply(school_class("c2", "s2"))
    servicer = servicer_with(view)

    def upsert(principal: Principal, *records: roster_pb2.RosterRecord) -> object:
        request = ingest_pb2.UpsertRosterRequest(tenant_id=TENANT, records=records)
        return call_as(principal, servicer.UpsertRoster, request)

    mine = enrollment("e1", "c1", "sis-1")
    mine.enrollment.school_id = "s1"
    # e9 enrols a learner in c2 (school s2): rewriting it into c1 would take them out of s2.
    view.apply(enrollment("e9", "c2", "p9"))
    out_of_c2 = enrollment("e9", "c1", "sis-9")
    out_of_c2.enrollment.school_id = "s1"
    for principal in (SCHOOL_ADMIN, Principal(tenant_id=TENANT, schools=["s1"])):
        upsert(principal, school_class("c1", "s1"), mine)
        into_c2 = enrollment("e2", "c2", "sis-1")
        into_c2.enrollment.school_id = "s1"  # names s1, but the roster places c2 in s2
        for records in (
            [school_class("c3", "s2")],
            [mine, into_c2],
            [school_class("c2", "s1")],
            [out_of_c2],
        ):
            with pytest.raises(PermissionDenied):
                upsert(principal, *records)
    # Tenant-wide callers write any school.
    upsert(Principal(tenant_id=TENANT, role="district_admin"), school_class("c2", "s1"))


def test_a_learner_record_of_another_school_is_not_taken_over() -> None:
    view = RosterView()
    servicer = servicer_with(view)
    view.apply(learner("sis-b", "s2"))  # as stored: the topic holds pseudonyms

    def record(sis_id: str, school_id: str) -> ingest_pb2.UpsertRosterRequest:
        return ingest_pb2.UpsertRosterRequest(
            tenant_id=TENANT,
            records=[
                roster_pb2.RosterRecord(
                    learner=roster_pb2.Learner(sourced_id=sis_id, school_id=school_id)
                )
            ],
        )

    # A school-s1 token may not rewrite s2's learner into s1 (school, subgroups, sealed name) ...
    with pytest.raises(PermissionDenied):
        call_as(SCHOOL_ADMIN, servicer.UpsertRoster, record("sis-b", "s1"))
    # ... but writes a learner the roster holds no record of, or one of its own school.
    call_as(SCHOOL_ADMIN, servicer.UpsertRoster, record("sis-new", "s1"))
    view.apply(learner("sis-a", "s1"))
    call_as(SCHOOL_ADMIN, servicer.UpsertRoster, record("sis-a", "s1"))
    # A transfer is written by a tenant-wide feed (the SIS) or a token of both schools.
    call_as(Principal(tenant_id=TENANT), servicer.UpsertRoster, record("sis-b", "s1"))
    call_as(
        Principal(tenant_id=TENANT, schools=["s1", "s2"]),
        servicer.UpsertRoster,
        record("sis-b", "s1"),
    )
    view.remove(TENANT, "learner", PSEUDONYMS.pseudonymize(TENANT, "sis-b"))
    call_as(SCHOOL_ADMIN, servicer.UpsertRoster, record("sis-b", "s1"))


def learner(sis_id: str, school_id: str) -> roster_pb2.RosterRecord:
    """A learner's record as the roster topic stores it (pseudonymous id)."""
    return roster_pb2.RosterRecord(
        tenant_id=TENANT,
        learner=roster_pb2.Learner(
            sourced_id=PSEUDONYMS.pseudonymize(TENANT, sis_id), school_id=school_id
        ),
    )


def test_a_learner_of_another_school_is_not_taken_over_by_an_enrollment() -> None:
    """c1 and c3 in s1, c2 in s2; the roster places sis-b in c2 and sis-r by their record in s2
    only, sis-d in c1 and c2."""
    view = RosterView()
    for class_id, school_id in (("c1", "s1"), ("c2", "s2"), ("c3", "s1")):
        view.apply(school_class(class_id, school_id))
    for sis_id, class_id in (("sis-b", "c2"), ("sis-d", "c1"), ("sis-d", "c2")):
        pseudonym = PSEUDONYMS.pseudonymize(TENANT, sis_id)
        view.apply(enrollment(f"{sis_id}-{class_id}", class_id, pseudonym))
    view.apply(learner("sis-r", "s2"))
    publisher = test_service.MemoryPublisher()
    servicer = servicer_with(view, publisher)

    def upsert(principal: Principal, *records: roster_pb2.RosterRecord) -> None:
        request = ingest_pb2.UpsertRosterRequest(tenant_id=TENANT, records=records)
        reply = call_as(principal, servicer.UpsertRoster, request)
        assert all(r.status == ingest_pb2.ITEM_STATUS_ACCEPTED for r in reply.results)

    def into(class_id: str, sis_id: str, role: str = "learner") -> roster_pb2.RosterRecord:
        record = enrollment(f"new-{sis_id}-{class_id}", class_id, sis_id, role=role)
        record.enrollment.school_id = view.school_of(TENANT, class_id) or ""
        return record

    def record_of(sis_id: str) -> roster_pb2.RosterRecord:
        return roster_pb2.RosterRecord(
            learner=roster_pb2.Learner(sourced_id=sis_id, school_id="s1")
        )

    def c1_learners() -> list[str]:
        return view.class_learners(TENANT, "c1")

    members, into_c1_b = c1_learners(), into("c1", "sis-b")
    for principal in SCHOOL_SCOPED:
        # Enrolled only in s2, or known only by a record of s2: c1 would bring them into s1's
        # scope (reads, events); a record naming s1 would place them in s1. The batch's own
        # records do not count, and one such record denies the whole batch.
        for path, batch in (
            ("records[0].enrollment.user_id", [into_c1_b]),
            ("records[0].enrollment.user_id", [into("c1", "sis-r")]),
            ("records[0].learner.sourced_id", [record_of("sis-b"), into_c1_b]),
            ("records[2].enrollment.user_id", [record_of("n"), into("c1", "n"), into_c1_b]),
        ):
            with pytest.raises(PermissionDenied) as denied:
                upsert(principal, *batch)
            assert denied.value.message == f"{path}: {ROSTER_LEARNER_OUT_OF_SCOPE}"
    # Teachers write no roster, not even for a learner of their class.
    with pytest.raises(PermissionDenied):
        upsert(TEACHER, into("c1", "sis-d"))
    assert "roster" not in publisher.records
    assert c1_learners() == members

    # In one of its schools already (enrolled in two schools): another class of s1 is fine.
    upsert(SCHOOL_ADMIN, into("c3", "sis-d"))
    # A new learner: record and enrollment together, in either order.
    upsert(SCHOOL_ADMIN, record_of("sis-n1"), into("c1", "sis-n1"))
    upsert(SCHOOL_ADMIN, into("c1", "sis-n2"), record_of("sis-n2"))
    # A teacher's enrollment gives no scope over learners: not checked, and c1 enrols no one more.
    upsert(SCHOOL_ADMIN, into("c1", "sis-b", role="teacher"))
    assert PSEUDONYMS.pseudonymize(TENANT, "sis-b") not in c1_learners()
    # Tenant-wide callers and a token of both schools enrol anyone (a transfer, a second school).
    upsert(Principal(tenant_id=TENANT), into("c1", "sis-r"))
    upsert(Principal(tenant_id="ops", role="platform_admin", schools=["s1"]), into("c3", "sis-r"))
    upsert(Principal(tenant_id=TENANT, schools=["s1", "s2"]), into("c3", "sis-b"))
    # Once the roster ends sis-b's enrollments (tombstones), sis-b is new to it again.
    for enrollment_id in ("sis-b-c2", "new-sis-b-c3"):
        view.remove(TENANT, "enrollment", enrollment_id)
    upsert(SCHOOL_ADMIN, into("c1", "sis-b"))


def test_the_catalog_is_written_by_tenant_wide_callers_only() -> None:
    servicer = servicer_with(RosterView())
    request = ingest_pb2.UpsertCatalogRequest(
        tenant_id=TENANT,
        records=[catalog_pb2.CatalogRecord(skill=catalog_pb2.Skill(skill_id="a"))],
    )
    for principal in (SCHOOL_ADMIN, Principal(tenant_id=TENANT, schools=["s1"])):
        with pytest.raises(PermissionDenied):
            call_as(principal, servicer.UpsertCatalog, request)
    for principal in (
        Principal(tenant_id=TENANT),
        Principal(tenant_id=TENANT, role="district_admin"),
        Principal(tenant_id="ops", role="platform_admin", schools=["s1"]),
    ):
        reply = call_as(principal, servicer.UpsertCatalog, request)
        assert [r.status for r in reply.results] == [ingest_pb2.ITEM_STATUS_ACCEPTED]


def erasure_request() -> envelope_pb2.Envelope:
    event = valid_event()
    event.event_id = "erase-1"
    event.learner_erasure_requested.SetInParent()
    return event


def test_a_teacher_cannot_request_an_erasure_even_for_an_enrolled_learner() -> None:
    view = RosterView()
    view.apply(school_class("c1", "s1"))
    view.apply(enrollment("e1", "c1", PSEUDONYMS.pseudonymize(TENANT, "sis-1")))
    servicer = servicer_with(view)
    request = ingest_pb2.RecordEventsRequest(tenant_id=TENANT, events=[erasure_request()])
    with pytest.raises(PermissionDenied):
        call_as(TEACHER, servicer.RecordEvents, request)
    admin = Principal(tenant_id=TENANT, role="district_admin", schools=["s1"])
    for caller in (Principal(tenant_id=TENANT), admin):
        reply = call_as(caller, servicer.RecordEvents, request)
        assert reply.results[0].status in (
            ingest_pb2.ITEM_STATUS_ACCEPTED,
            ingest_pb2.ITEM_STATUS_DUPLICATE,
        )


def about(
    learner: str, event_id: str, klass: str = "", erasure: bool = False
) -> envelope_pb2.Envelope:
    """An event in school s1 (the school admin's) about a learner (SIS id)."""
    event = erasure_request() if erasure else valid_event()
    event.event_id, event.learner_id, event.class_id = event_id, learner, klass
    return event


def two_schools() -> RosterView:
    """sis-1 enrolled in c1 (school s1), sis-2 in c2 (school s2); the roster holds pseudonyms.
    sis-2's learner record names s1: learner records grant no scope."""
    view = RosterView()
    view.apply(school_class("c1", "s1"))
    view.apply(school_class("c2", "s2"))
    view.apply(enrollment("e1", "c1", PSEUDONYMS.pseudonymize(TENANT, "sis-1")))
    view.apply(enrollment("e2", "c2", PSEUDONYMS.pseudonymize(TENANT, "sis-2")))
    pseudonym = PSEUDONYMS.pseudonymize(TENANT, "sis-2")
    learner = roster_pb2.Learner(sourced_id=pseudonym, school_id="s1")
    view.apply(roster_pb2.RosterRecord(tenant_id=TENANT, learner=learner))
    return view


SCHOOL_SCOPED = (SCHOOL_ADMIN, Principal(tenant_id=TENANT, schools=["s1"]))
TENANT_WIDE = (
    Principal(tenant_id=TENANT),
    Principal(tenant_id=TENANT, role="district_admin"),
    Principal(tenant_id="ops", role="platform_admin", schools=["s2"]),
)


def record(
    principal: Principal, servicer: IngestServicer, *events: envelope_pb2.Envelope
) -> ingest_pb2.RecordEventsResponse:
    request = ingest_pb2.RecordEventsRequest(tenant_id=TENANT, events=events)
    return call_as(principal, servicer.RecordEvents, request)


def test_a_caller_scoped_to_schools_writes_about_learners_of_its_schools_only() -> None:
    publisher = test_service.MemoryPublisher()
    servicer = servicer_with(two_schools(), publisher)
    for n, principal in enumerate(SCHOOL_SCOPED):
        reply = record(principal, servicer, about("sis-1", f"in-{n}", klass="c1"))
        assert [r.status for r in reply.results] == [ingest_pb2.ITEM_STATUS_ACCEPTED]
        assert "events[0].learner_id" not in [w.field for w in reply.results[0].warnings]
        # A learner of s2, in an event naming s1 and no class or a class of s1; alone, or in a
        # batch with a learner of s1: the whole batch is denied, nothing is stored.
        stored = len(publisher.records["activity"])
        for batch in (
            [about("sis-2", "x1")],
            [about("sis-2", "x2", klass="c1")],
            [about("sis-1", "x3"), about("sis-2", "x4")],
        ):
            with pytest.raises(PermissionDenied) as denied:
                record(principal, servicer, *batch)
            path = f"events[{len(batch) - 1}].learner_id"
            assert denied.value.message == f"{path}: {LEARNER_OUT_OF_SCOPE}"
        assert len(publisher.records["activity"]) == stored


def test_a_learner_the_roster_does_not_enrol_yet_is_accepted_with_a_warning() -> None:
    servicer = servicer_with(two_schools())
    for n, principal in enumerate(SCHOOL_SCOPED):
        reply = record(principal, servicer, about("sis-1", f"a{n}"), about("sis-3", f"b{n}"))
        assert [r.status for r in reply.results] == [ingest_pb2.ITEM_STATUS_ACCEPTED] * 2
        first = reply.results[1].warnings[0]
        assert (first.field, first.reason) == ("events[1].learner_id", UNKNOWN_LEARNER)
        assert "events[0].learner_id" not in [w.field for w in reply.results[0].warnings]


def test_tenant_wide_callers_write_about_any_learner_without_a_learner_warning() -> None:
    servicer = servicer_with(two_schools())
    for n, principal in enumerate(TENANT_WIDE):
        tenant = ingest_pb2.RecordEventsRequest(
            tenant_id=TENANT, events=[about("sis-2", f"w{n}"), about("sis-3", f"v{n}")]
        )
        reply = call_as(principal, servicer.RecordEvents, tenant)
        assert [r.status for r in reply.results] == [ingest_pb2.ITEM_STATUS_ACCEPTED] * 2
        assert not any(w.field.endswith("learner_id") for r in reply.results for w in r.warnings)


def test_a_caller_scoped_to_schools_erases_only_learners_of_its_schools() -> None:
    publisher = test_service.MemoryPublisher()
    servicer = servicer_with(two_schools(), publisher)
    for n, principal in enumerate(SCHOOL_SCOPED):
        # sis-2 is enrolled in s2 only (its learner record naming s1 does not count), sis-3 is
        # unknown to the roster: both refused, also beside an erasure in scope.
        for batch in (
            [about("sis-2", f"x{n}", erasure=True)],
            [about("sis-3", f"y{n}", erasure=True)],
            [about("sis-1", f"z{n}", erasure=True), about("sis-3", f"y{n}", erasure=True)],
        ):
            with pytest.raises(PermissionDenied) as denied:
                record(principal, servicer, *batch)
            path = f"events[{len(batch) - 1}].learner_id"
            assert denied.value.message == f"{path}: {ERASURE_OUT_OF_SCOPE}"
        assert "activity" not in publisher.records
    reply = record(SCHOOL_ADMIN, servicer, about("sis-1", "erase-1", erasure=True))
    assert [r.status for r in reply.results] == [ingest_pb2.ITEM_STATUS_ACCEPTED]
    for n, principal in enumerate(TENANT_WIDE):
        erasures = [about(sis, f"erase-{sis}-{n}", erasure=True) for sis in ("sis-2", "sis-3")]
        reply = record(principal, servicer, *erasures)
        assert [r.status for r in reply.results] == [ingest_pb2.ITEM_STATUS_ACCEPTED] * 2


def test_a_scoped_callers_stream_is_checked_per_event() -> None:
    servicer = servicer_with(two_schools())
    answers: list[ingest_pb2.ItemResult] = []

    async def consume() -> None:
        async def events():  # type: ignore[no-untyped-def]
            yield about("sis-1", "s-1")
            yield about("sis-2", "s-2", erasure=True)

        async for answer in servicer.StreamEvents(events(), None):  # type: ignore[arg-type]
            answers.append(answer)

    with pytest.raises(PermissionDenied) as denied:
        call_as(SCHOOL_ADMIN, lambda _r, _c: consume(), None)
    assert [a.status for a in answers] == [ingest_pb2.ITEM_STATUS_ACCEPTED]
    assert denied.value.message == f"events[1].learner_id: {ERASURE_OUT_OF_SCOPE}"
