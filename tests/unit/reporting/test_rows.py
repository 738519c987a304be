"""Envelope -> reporting rows: the pure mapping the sink applies to every record."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from trellis.common.pb.events.v1 import activity_pb2, envelope_pb2, mastery_pb2, roster_pb2
from trellis.reporting.rows import (
    ACTIVITY,
    ERASED_LEARNERS,
    MASTERY_EVENTS,
    MASTERY_HISTORY,
    MASTERY_LATEST,
    ROSTER_CLASSES,
    ROSTER_LEARNERS,
    ClassRow,
    ErasedLearnerRow,
    LearnerRow,
    Position,
    RowError,
    activity_rows,
    mastery_rows,
    roster_rows,
    rows_for,
)

POSITION = Position("trellis.mastery.v1", 3, 42)
OCCURRED = datetime(2025, 9, 1, 8, 30, 15, 123000, tzinfo=UTC)
INGESTED = datetime(2025, 9, 1, 8, 30, 16, tzinfo=UTC)
# Rows carry times as epoch milliseconds (DateTime64(3) ticks).
OCCURRED_MS = 1_756_715_415_123
INGESTED_MS = 1_756_715_416_000


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _envelope(**payload: object) -> envelope_pb2.Envelope:
    return envelope_pb2.Envelope(
        event_id="evt-1",
        tenant_id="district-a",
        school_id="school-1",
        class_id="class-7",
        learner_id="0f" * 16,
        occurred_at=_ts(OCCURRED),
        ingested_at=_ts(INGESTED),
        source=envelope_pb2.Source(system="practice-app", actor=envelope_pb2.Source.ACTOR_LEARNER),
        **payload,  # type: ignore[arg-type]
    )


def _mastery(**fields: object) -> envelope_pb2.Envelope:
    values: dict[str, object] = {
        "skill_id": "math.fractions.add",
        "p_before": 0.4,
        "p_after": 0.55,
        "level": mastery_pb2.MASTERY_LEVEL_PRACTICING,
        "cause_event_id": "act-9",
        "model_version": "bkt-2025-08",
        "attempts": 5,
    }
    values.update(fields)
    return _envelope(mastery_updated=mastery_pb2.MasteryUpdated(**values))  # type: ignore[arg-type]


def test_mastery_updated_becomes_a_history_row_and_a_latest_row() -> None:
    rows = mastery_rows(_mastery(), POSITION)

    assert [table for table, _ in rows] == [MASTERY_HISTORY, MASTERY_LATEST]
    history, latest = rows[0][1], rows[1][1]
    assert history._asdict() == {
        "event_id": "evt-1",
        "tenant_id": "district-a",
        "school_id": "school-1",
        "class_id": "class-7",
        "learner_id": "0f" * 16,
        "skill_id": "math.fractions.add",
        "p_before": 0.4,
        "p_after": 0.55,
        "level": mastery_pb2.MASTERY_LEVEL_PRACTICING,
        "cause_event_id": "act-9",
        "model_version": "bkt-2025-08",
        "attempts": 5,
        "occurred_at": OCCURRED_MS,
        "ingested_at": INGESTED_MS,
        "source_topic": "trellis.mastery.v1",
        "source_partition": 3,
        "source_offset": 42,
    }
    assert latest.p_mastered == 0.55
    assert latest.updated_at == OCCURRED_MS
    assert latest.event_id == "evt-1"
    assert (latest.source_partition, latest.source_offset) == (3, 42)
    # the latest table is keyed by tenant, class, learner, skill
    assert {"tenant_id", "class_id", "learner_id", "skill_id"} <= set(latest._fields)


def test_timestamps_are_epoch_milliseconds_truncated() -> None:
    ts = Timestamp(seconds=1_756_715_415, nanos=123_956_789)
    envelope = _mastery()
    envelope.occurred_at.CopyFrom(ts)

    occurred = mastery_rows(envelope, POSITION)[0][1].occurred_at

    assert occurred == 1_756_715_415_123
    assert datetime.fromtimestamp(occurred / 1000, UTC) == datetime(
        2025, 9, 1, 8, 30, 15, 123000, tzinfo=UTC
    )


def test_missing_event_time_falls_back_to_ingest_time() -> None:
    envelope = _mastery()
    envelope.ClearField("occurred_at")

    assert mastery_rows(envelope, POSITION)[0][1].occurred_at == INGESTED_MS


def test_other_mastery_events_become_mastery_event_rows() -> None:
    mastered = _envelope(skill_mastered=mastery_pb2.SkillMastered(skill_id="s", p_mastered=0.96))
    struggling = _envelope(
        struggling_detected=mastery_pb2.StrugglingDetected(
            skill_id="s", reason="repeated_error", attempts=7, error_tag="sign"
        )
    )
    overridden = _envelope(
        mastery_overridden=mastery_pb2.MasteryOverridden(
            skill_id="s", p_after=0.9, reason="Knows it: asked them in class"
        )
    )

    [(table, row)] = mastery_rows(mastered, POSITION)
    assert table == MASTERY_EVENTS
    assert (row.kind, row.skill_id, row.p, row.reason) == (
        "skill_mastered",
        "s",
        0.96,
        "",
    )
    [(_, row)] = mastery_rows(struggling, POSITION)
    assert (row.kind, row.reason, row.error_tag, row.attempts) == (
        "struggling_detected",
        "repeated_error",
        "sign",
        7,
    )
    [(_, row)] = mastery_rows(overridden, POSITION)
    # The teacher's free text never reaches a table.
    assert (row.kind, row.reason, row.p) == ("mastery_overridden", "teacher_override", 0.9)


def test_erasure_requests_and_erased_learners_become_erasure_rows() -> None:
    requested = _envelope(
        learner_erasure_requested=activity_pb2.LearnerErasureRequested(reason="parent request")
    )
    erased = _envelope(learner_erased=mastery_pb2.LearnerErased(cause_event_id="x"))

    expected = ErasedLearnerRow(
        tenant_id="district-a",
        learner_id="0f" * 16,
        event_id="evt-1",
        erased_at=OCCURRED_MS,
        source_topic="trellis.mastery.v1",
        source_partition=3,
        source_offset=42,
    )
    assert activity_rows(requested, POSITION) == [(ERASED_LEARNERS, expected)]
    assert mastery_rows(erased, POSITION) == [(ERASED_LEARNERS, expected)]


def test_roster_records_become_rows_and_tombstones_deleted_rows() -> None:
    learner = roster_pb2.RosterRecord(
        tenant_id="district-a",
        learner=roster_pb2.Learner(
            sourced_id="l1",
            school_id="sch",
            grade="4",
            subgroups=["iep", "ell", "iep"],
            sealed_identity=b"secret",
        ),
    )
    enrollment = roster_pb2.RosterRecord(
        tenant_id="district-a",
        enrollment=roster_pb2.Enrollment(
            sourced_id="e1", class_id="c1", user_id="l1", role="learner", school_id="sch"
        ),
    )
    assert roster_rows(b"district-a/learner/l1", learner, POSITION) == [
        (
            ROSTER_LEARNERS,
            LearnerRow(
                tenant_id="district-a",
                learner_id="l1",
                deleted=0,
                school_id="sch",
                grade="4",
                subgroups=("ell", "iep"),
                source_topic="trellis.mastery.v1",
                source_partition=3,
                source_offset=42,
            ),
        )
    ]
    assert roster_rows(b"district-a/enrollment/e1", enrollment, POSITION)[0][1].learner_id == "l1"
    assert roster_rows(b"district-a/school_class/c9", None, POSITION) == [
        (
            ROSTER_CLASSES,
            ClassRow(
                tenant_id="district-a",
                class_id="c9",
                deleted=1,
                school_id="",
                grade="",
                subject="",
                source_topic="trellis.mastery.v1",
                source_partition=3,
                source_offset=42,
            ),
        )
    ]
    with pytest.raises(RowError, match="does not match"):
        roster_rows(b"district-b/learner/l1", learner, POSITION)
    with pytest.raises(RowError, match="tenant/kind/id"):
        roster_rows(b"nonsense", None, POSITION)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.ClearField("event_id"), "event_id"),
        (lambda e: e.ClearField("tenant_id"), "tenant_id"),
        (lambda e: e.ClearField("learner_id"), "learner_id"),
        (lambda e: e.mastery_updated.ClearField("skill_id"), "skill_id"),
        (lambda e: setattr(e.mastery_updated, "p_after", 1.5), "p_after"),
        (lambda e: setattr(e.mastery_updated, "p_before", math.nan), "p_before"),
        (lambda e: (e.ClearField("occurred_at"), e.ClearField("ingested_at")), "occurred_at"),
        (lambda e: e.ClearField("payload"), "payload"),
        (lambda e: e.occurred_at.CopyFrom(Timestamp(seconds=-5_000_000_000)), "out of range"),
    ],
)
def test_malformed_mastery_envelopes_raise_row_error(mutate: object, message: str) -> None:
    envelope = _mastery()
    mutate(envelope)  # type: ignore[operator]

    with pytest.raises(RowError, match=message):
        mastery_rows(envelope, POSITION)


def test_item_attempted_becomes_an_activity_row() -> None:
    envelope = _envelope(
        item_attempted=activity_pb2.ItemAttempted(
            item_id="item-3",
            skill_ids=["s1", "s2"],
            correct=False,
            attempt_number=2,
            hints_used=1,
            duration_seconds=31.5,
            error_tag="sign-error",
            assignment_id="hw-4",
        )
    )

    [(table, row)] = activity_rows(envelope, Position("trellis.activity.v1", 0, 7))

    assert table == ACTIVITY
    assert row.kind == "item_attempted"
    assert row.activity_id == "item-3"
    assert row.skill_ids == ("s1", "s2")
    assert row.correct is False
    assert row.score == 0.0  # no score: 1.0 if correct else 0.0
    assert (row.attempt_number, row.hints_used, row.duration_seconds) == (2, 1, 31.5)
    assert (row.error_tag, row.assignment_id, row.self_chosen) == (
        "sign-error",
        "hw-4",
        False,
    )
    assert (row.actor, row.source_system) == ("learner", "practice-app")
    assert (row.school_id, row.class_id) == ("school-1", "class-7")
    assert (row.source_topic, row.source_partition, row.source_offset) == (
        "trellis.activity.v1",
        0,
        7,
    )


def test_partial_credit_wins_and_an_unknown_outcome_stays_null() -> None:
    scored = _envelope(item_attempted=activity_pb2.ItemAttempted(item_id="i", score=0.5))
    unknown = _envelope(item_attempted=activity_pb2.ItemAttempted(item_id="i"))

    scored_row = activity_rows(scored, POSITION)[0][1]
    unknown_row = activity_rows(unknown, POSITION)[0][1]

    assert (scored_row.correct, scored_row.score) == (None, 0.5)
    assert (unknown_row.correct, unknown_row.score) == (None, None)


def test_resource_engaged_records_time_and_completion() -> None:
    envelope = _envelope(
        resource_engaged=activity_pb2.ResourceEngaged(
            resource_id="video-1", seconds=90, completion=0.75
        )
    )

    row = activity_rows(envelope, POSITION)[0][1]

    assert (row.kind, row.activity_id) == ("resource_engaged", "video-1")
    assert (row.duration_seconds, row.completion) == (90.0, 0.75)


def test_free_text_never_reaches_a_row() -> None:
    envelope = _envelope(
        reflection_submitted=activity_pb2.ReflectionSubmitted(
            reflection_id="r1", text="my name is Jane Doe", skill_id="s1"
        )
    )

    row = activity_rows(envelope, POSITION)[0][1]

    assert row.skill_ids == ("s1",)
    assert "Jane" not in repr(row)


def test_review_ticks_and_mastery_payloads_are_not_activity() -> None:
    tick = _envelope(review_tick=activity_pb2.ReviewTick())

    assert activity_rows(tick, POSITION) == []
    assert activity_rows(_mastery(), POSITION) == []


def test_rows_for_dispatches_by_stream() -> None:
    envelope = _mastery()

    assert [t for t, _ in rows_for("mastery", envelope, POSITION)] == [
        MASTERY_HISTORY,
        MASTERY_LATEST,
    ]
    assert rows_for("activity", envelope, POSITION) == []


def test_out_of_range_values_in_activity_raise_row_error() -> None:
    envelope = _envelope(item_attempted=activity_pb2.ItemAttempted(item_id="i", score=2.0))

    with pytest.raises(RowError, match="score"):
        activity_rows(envelope, POSITION)
