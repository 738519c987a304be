"""Existence checks against the catalog replica and class/school consistency against the roster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trellis.common.pb.events.v1 import catalog_pb2, envelope_pb2, roster_pb2
from trellis.ingest.catalog import CatalogView
from trellis.ingest.references import UnknownReferences, check_references
from trellis.ingest.roster import RosterView

TENANT = "district-a"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def catalog() -> CatalogView:
    view = CatalogView()
    view.apply(catalog_pb2.CatalogRecord(tenant_id=TENANT, skill=catalog_pb2.Skill(skill_id="s1")))
    view.apply(catalog_pb2.CatalogRecord(tenant_id=TENANT, item=catalog_pb2.Item(item_id="i1")))
    view.apply(
        catalog_pb2.CatalogRecord(tenant_id=TENANT, resource=catalog_pb2.Resource(resource_id="r1"))
    )
    return view


@pytest.fixture
def roster() -> RosterView:
    view = RosterView()
    view.apply(
        roster_pb2.RosterRecord(
            tenant_id=TENANT, school_class=roster_pb2.SchoolClass(sourced_id="c1", school_id="sch1")
        )
    )
    return view


def attempt(
    item: str = "i1", skills: tuple[str, ...] = ("s1",), **envelope: str
) -> envelope_pb2.Envelope:
    event = envelope_pb2.Envelope(event_id="e1", learner_id="sis-1", **envelope)
    event.occurred_at.FromDatetime(NOW - timedelta(minutes=1))
    event.item_attempted.item_id = item
    event.item_attempted.skill_ids.extend(skills)
    event.item_attempted.correct = True
    return event


def fields(found: list) -> list[str]:  # type: ignore[type-arg]
    return [v.field for v in found]


def test_known_references_pass(catalog: CatalogView, roster: RosterView) -> None:
    found = check_references(
        attempt(school_id="sch1", class_id="c1"), "events[0]", TENANT, catalog, roster, "reject"
    )
    assert found.violations == [] and found.warnings == []


@pytest.mark.parametrize(("mode", "rejected"), [("reject", True), ("flag", False)])
def test_unknown_item_and_skill(
    catalog: CatalogView, roster: RosterView, mode: UnknownReferences, rejected: bool
) -> None:
    found = check_references(
        attempt(item="i9", skills=("s1", "s9")), "events[2]", TENANT, catalog, roster, mode
    )
    expected = ["events[2].item_attempted.item_id", "events[2].item_attempted.skill_ids[1]"]
    assert fields(found.violations if rejected else found.warnings) == expected
    assert (found.warnings if rejected else found.violations) == []


def test_unknown_resource_and_other_tenant(catalog: CatalogView, roster: RosterView) -> None:
    engaged = envelope_pb2.Envelope(event_id="e", learner_id="l")
    engaged.resource_engaged.resource_id = "r1"
    assert check_references(engaged, "e", TENANT, catalog, roster, "reject").violations == []
    # Another tenant's catalog is another catalog.
    found = check_references(engaged, "e", "district-b", catalog, roster, "reject")
    assert fields(found.violations) == ["e.resource_engaged.resource_id"]


def test_off_checks_nothing_but_the_school(catalog: CatalogView, roster: RosterView) -> None:
    found = check_references(attempt(item="i9", class_id="c9"), "e", TENANT, catalog, roster, "off")
    assert found.violations == [] and found.warnings == []
    wrong = check_references(
        attempt(school_id="sch2", class_id="c1"), "e", TENANT, catalog, roster, "off"
    )
    assert fields(wrong.violations) == ["e.class_id"]


def test_class_in_another_school_is_rejected_unknown_class_flagged(
    catalog: CatalogView, roster: RosterView
) -> None:
    wrong = check_references(
        attempt(school_id="sch2", class_id="c1"), "e", TENANT, catalog, roster, "flag"
    )
    assert [(v.field, v.reason) for v in wrong.violations] == [
        ("e.class_id", "belongs to another school than school_id")
    ]
    unknown = check_references(
        attempt(school_id="sch2", class_id="c7"), "e", TENANT, catalog, roster, "reject"
    )
    assert unknown.violations == [] and fields(unknown.warnings) == ["e.class_id"]
    # The same class id in another tenant is another class.
    other = check_references(
        attempt(school_id="sch2", class_id="c1"), "e", "district-b", catalog, roster, "flag"
    )
    assert other.violations == []
