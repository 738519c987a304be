"""What a mastery subscription lets through, and where it starts on each partition."""

from __future__ import annotations

import pytest

from trellis.common.pb.events.v1 import envelope_pb2
from trellis.mastery.subscriptions import EventFilter, start_offsets


def event(
    tenant: str = "t", learner: str = "p1", class_id: str = "7a", school: str = "s1"
) -> envelope_pb2.Envelope:
    return envelope_pb2.Envelope(
        tenant_id=tenant, learner_id=learner, class_id=class_id, school_id=school
    )


def test_a_tenant_filter_takes_only_that_tenants_keys_and_events() -> None:
    tenant = EventFilter("t")
    assert tenant.accepts_key(b"t/p1") and tenant.accepts_key(b"t/p2")
    assert not tenant.accepts_key(b"t2/p1")  # a tenant whose id starts alike
    assert not tenant.accepts_key(None)
    assert tenant.accepts(event()) and not tenant.accepts(event(tenant="u"))


def test_class_and_learner_filters() -> None:
    in_class = EventFilter("t", class_id="7a")
    assert in_class.accepts(event()) and not in_class.accepts(event(class_id="7b"))
    learner = EventFilter("t", learner_id="p1")
    assert learner.accepts_key(b"t/p1") and not learner.accepts_key(b"t/p10")
    assert learner.accepts(event()) and not learner.accepts(event(learner="p2"))


def test_a_school_filter_takes_only_events_of_those_schools() -> None:
    schools = EventFilter("t", schools=frozenset({"s1", "s3"}))
    assert schools.accepts(event()) and schools.accepts(event(school="s3"))
    assert not schools.accepts(event(school="s2")) and not schools.accepts(event(school=""))


def test_start_right_after_the_named_offsets_else_at_the_end_or_beginning() -> None:
    assert start_offsets(range(3), {1: 41, 2: -1}, from_beginning=False) == {
        0: None,
        1: 42,
        2: 0,
    }
    assert start_offsets(range(2), {}, from_beginning=True) == {0: 0, 1: 0}


def test_positions_outside_the_topic_are_refused() -> None:
    with pytest.raises(ValueError, match="partition 3"):
        start_offsets(range(3), {3: 0}, from_beginning=False)
    with pytest.raises(ValueError, match="below -1"):
        start_offsets(range(3), {0: -2}, from_beginning=False)
