"""Contract mapping: ItemAttempted -> Attempt, domain outputs -> mastery.v1 envelopes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from trellis.common.pb.events.v1 import activity_pb2, envelope_pb2, mastery_pb2
from trellis.mastery.domain import Level, MasteryChange, SkillMastered
from trellis.mastery.events import (
    OUTPUT_ID_NAMESPACE,
    InvalidEvent,
    attempt_from_envelope,
    output_envelope,
    output_event_id,
)

OCCURRED = datetime(2026, 9, 1, 8, 30, tzinfo=UTC)
INGESTED = datetime(2026, 9, 1, 8, 31, tzinfo=UTC)


def _ts(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def cause(**attempted: object) -> envelope_pb2.Envelope:
    return envelope_pb2.Envelope(
        event_id="evt-1",
        tenant_id="district-a",
        school_id="school-1",
        class_id="class-1",
        learner_id="pseudo-1",
        pseudonym_key_version=2,
        occurred_at=_ts(OCCURRED),
        ingested_at=_ts(INGESTED),
        source=envelope_pb2.Source(system="app", actor=envelope_pb2.Source.Actor.ACTOR_LEARNER),
        item_attempted=activity_pb2.ItemAttempted(item_id="i", skill_ids=["a", "b"], **attempted),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("attempted", "score"),
    [({"correct": True}, 1.0), ({"correct": False}, 0.0), ({"score": 0.25}, 0.25),
     ({"correct": False, "score": 0.75}, 0.75)],
)  # fmt: skip
def test_the_outcome_is_the_score_else_correct(attempted: dict[str, object], score: float) -> None:
    attempt, when = attempt_from_envelope(cause(**attempted))
    assert attempt.score == score
    assert attempt.skill_ids == ("a", "b")
    assert attempt.event_id == "evt-1"
    assert when == OCCURRED


def test_an_attempt_without_outcome_is_invalid() -> None:
    with pytest.raises(InvalidEvent, match="neither correct nor score"):
        attempt_from_envelope(cause())


def test_a_score_outside_zero_one_is_invalid() -> None:
    with pytest.raises(InvalidEvent):
        attempt_from_envelope(cause(score=1.5))


def test_event_time_falls_back_to_ingest_time() -> None:
    envelope = cause(correct=True)
    envelope.ClearField("occurred_at")
    assert attempt_from_envelope(envelope)[1] == INGESTED
    envelope.ClearField("ingested_at")
    with pytest.raises(InvalidEvent):
        attempt_from_envelope(envelope)


def test_output_ids_are_deterministic_per_cause_kind_and_skill() -> None:
    expected = uuid.uuid5(OUTPUT_ID_NAMESPACE, "evt-1\x1fmastery_updated\x1fa")
    assert output_event_id("evt-1", "mastery_updated", "a") == str(expected)
    assert output_event_id("evt-1", "mastery_updated", "a") == str(expected)
    others = {
        output_event_id("evt-1", "skill_mastered", "a"),
        output_event_id("evt-1", "mastery_updated", "b"),
        output_event_id("evt-2", "mastery_updated", "a"),
    }
    assert str(expected) not in others and len(others) == 3


@pytest.mark.parametrize("cause_id", ["evt-1", "r0-19999", "ünïcode-事件", "", "x" * 300])
def test_output_ids_are_uuid5_of_the_name(cause_id: str) -> None:
    for kind, skill in [("mastery_updated", "fractions.add"), ("learner_erased", "")]:
        name = f"{cause_id}\x1f{kind}\x1f{skill}"
        assert output_event_id(cause_id, kind, skill) == str(uuid.uuid5(OUTPUT_ID_NAMESPACE, name))


def test_a_mastery_change_becomes_mastery_updated() -> None:
    change = MasteryChange("a", 0.3, 0.69, Level.PRACTICING, 1, "default-v1", "evt-1")
    envelope = output_envelope(cause(correct=True), change)

    assert envelope.event_id == output_event_id("evt-1", "mastery_updated", "a")
    assert (envelope.tenant_id, envelope.school_id, envelope.class_id, envelope.learner_id) == (
        "district-a", "school-1", "class-1", "pseudo-1",
    )  # fmt: skip
    assert envelope.pseudonym_key_version == 2
    assert envelope.occurred_at.ToDatetime(tzinfo=UTC) == OCCURRED
    assert envelope.ingested_at.ToDatetime(tzinfo=UTC) == INGESTED
    assert envelope.source == envelope_pb2.Source(
        system="trellis-mastery", actor=envelope_pb2.Source.Actor.ACTOR_SYSTEM
    )
    assert envelope.mastery_updated == mastery_pb2.MasteryUpdated(
        skill_id="a",
        p_before=0.3,
        p_after=0.69,
        level=mastery_pb2.MASTERY_LEVEL_PRACTICING,
        cause_event_id="evt-1",
        model_version="default-v1",
        attempts=1,
    )


def test_a_crossing_becomes_skill_mastered() -> None:
    envelope = output_envelope(cause(correct=True), SkillMastered("b", 0.96, "evt-1"))
    assert envelope.event_id == output_event_id("evt-1", "skill_mastered", "b")
    assert envelope.skill_mastered == mastery_pb2.SkillMastered(
        skill_id="b", p_mastered=0.96, cause_event_id="evt-1"
    )
