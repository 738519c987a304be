"""The replica and the appliers that feed it from catalog and roster records (tombstones too)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from trellis.common.codec import encode_catalog, encode_roster
from trellis.common.pb.events.v1 import catalog_pb2, mastery_pb2, roster_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2 as api
from trellis.common.roster import roster_applier
from trellis.recommender.adapters import convert
from trellis.recommender.adapters.followers import catalog_applier
from trellis.recommender.model import REVIEW_DUE
from trellis.recommender.replica import Replica


def test_catalog_records_and_tombstones() -> None:
    replica = Replica()
    apply = catalog_applier(replica)
    skill = catalog_pb2.CatalogRecord(
        tenant_id="t", skill=catalog_pb2.Skill(skill_id="b", prerequisite_ids=["a"])
    )
    item = catalog_pb2.CatalogRecord(
        tenant_id="t", item=catalog_pb2.Item(item_id="i/1", skill_ids=["b"], timed=True)
    )
    for record in (skill, item):
        encoded = encode_catalog(record)
        apply(encoded.key, encoded.value, encoded.headers)
    catalog = replica.catalog("t")
    assert catalog.skills["b"].prerequisites == ("a",)
    assert catalog.items["i/1"].timed
    assert replica.catalog("t") is catalog  # snapshot reused until a change
    apply(b"t/item/i/1", None, [])
    assert "i/1" not in replica.catalog("t").items
    assert replica.catalog("other").skills == {}


def test_roster_enrollments_and_tombstones() -> None:
    replica = Replica()
    apply = roster_applier(replica.roster)
    records = [
        roster_pb2.RosterRecord(
            tenant_id="t", school_class=roster_pb2.SchoolClass(sourced_id="c1", school_id="s1")
        ),
        roster_pb2.RosterRecord(
            tenant_id="t",
            enrollment=roster_pb2.Enrollment(
                sourced_id="e1", class_id="c1", user_id="p1", role="learner"
            ),
        ),
        roster_pb2.RosterRecord(
            tenant_id="t",
            enrollment=roster_pb2.Enrollment(
                sourced_id="e2", class_id="c1", user_id="x", role="teacher"
            ),
        ),
    ]
    for record in records:
        encoded = encode_roster(record)
        apply(encoded.key, encoded.value, encoded.headers)
    assert replica.roster.class_learners("t", "c1") == ["p1"]
    assert replica.roster.learner_classes("t", "p1") == ["c1"]
    assert replica.roster.school_of("t", "c1") == "s1"
    apply(b"t/enrollment/e1", None, [])
    assert replica.roster.class_learners("t", "c1") == []


def test_learner_state_days_since_practice() -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    last = Timestamp()
    last.FromDatetime(now - timedelta(days=30))
    message = api.LearnerMastery(
        skills=[
            api.SkillMastery(
                skill_id="a",
                p_mastered=0.96,
                level=mastery_pb2.MASTERY_LEVEL_REVIEW_DUE,
                last_practiced_at=last,
                overridden=True,
            ),
            api.SkillMastery(skill_id="b", p_mastered=0.2),
        ]
    )
    learner = convert.learner_state(message, now)
    assert learner.get("a").level == REVIEW_DUE and learner.get("a").overridden
    assert learner.get("a").days_since_practice == 30.0
    assert learner.get("b").days_since_practice is None
