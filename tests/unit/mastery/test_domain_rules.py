"""Model rules beyond the BKT update: review due, per-skill threshold, struggling, overrides.

Values are hand-computed (comments) and asserted as literals.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trellis.mastery.domain import (
    DEFAULT,
    EMPTY,
    STRUGGLING_ATTEMPTS,
    Attempt,
    BktParameters,
    InvalidAttempt,
    Level,
    MasteryChange,
    MasteryOverridden,
    ReviewDue,
    SkillMastered,
    StrugglingDetected,
    TeacherOverride,
    apply_attempt,
    apply_override,
    apply_tick,
    recall,
)

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def defaults(_skill: str) -> BktParameters:
    return DEFAULT


# prior 0.94, forget 0.1/day: one correct answer -> posterior 0.846/0.858, after learning
# 706/715 = 0.987412587413 (mastered). Recall after 1 day: *0.9 = 0.888671328671 (>= 0.8);
# after 2 days: *0.81 = 0.799804195804 (< 0.8: review due).
DECAYING = BktParameters(prior=0.94, forget=0.1, version="v2")


def decaying(_skill: str) -> BktParameters:
    return DECAYING


def test_recall_decays_geometrically_per_day() -> None:
    state, _ = apply_attempt(EMPTY, Attempt("e1", ("a",), 1.0), decaying, T0)
    skill = state.skills["a"]
    assert skill.p_mastered == pytest.approx(0.987412587413, abs=1e-12)
    assert recall(skill, DECAYING, T0) == skill.p_mastered
    assert recall(skill, DECAYING, T0 + DAY) == pytest.approx(0.888671328671, abs=1e-12)
    assert recall(skill, DECAYING, T0 + 2 * DAY) == pytest.approx(0.799804195804, abs=1e-12)
    assert recall(skill, DECAYING, T0 - DAY) == skill.p_mastered  # never grows backwards


def test_a_tick_emits_review_due_once_when_recall_falls_below_threshold() -> None:
    state, outputs = apply_attempt(EMPTY, Attempt("e1", ("a",), 1.0), decaying, T0)
    assert [type(o) for o in outputs] == [MasteryChange, SkillMastered]

    state, outputs = apply_tick(state, "t1", decaying, T0 + DAY)
    assert outputs == ()
    state, outputs = apply_tick(state, "t2", decaying, T0 + 2 * DAY)
    assert len(outputs) == 1
    review = outputs[0]
    assert isinstance(review, ReviewDue)
    assert (review.skill, review.cause_event_id) == ("a", "t2")
    assert review.p_recall == pytest.approx(0.799804195804, abs=1e-12)
    assert state.skills["a"].level is Level.REVIEW_DUE

    state, outputs = apply_tick(state, "t3", decaying, T0 + 3 * DAY)
    assert outputs == ()  # once per lapse
    again, replayed = apply_tick(state, "t2", decaying, T0 + 9 * DAY)
    assert again is state and replayed == (review,)  # a duplicate tick re-sends its outputs


def test_an_attempt_on_another_skill_also_notices_review_due_and_practice_clears_it() -> None:
    state, _ = apply_attempt(EMPTY, Attempt("e1", ("a",), 1.0), decaying, T0)
    state, outputs = apply_attempt(state, Attempt("e2", ("b",), 1.0), decaying, T0 + 2 * DAY)
    assert [(type(o), o.skill) for o in outputs] == [
        (MasteryChange, "b"),
        (SkillMastered, "b"),
        (ReviewDue, "a"),
    ]
    # Practicing "a" again starts from its recall 706/715 * 0.81 = 28593/35750; a correct answer:
    # posterior = 257337/271651 = 0.947307..., after learning 1293842/1358255 = 0.952576651660
    state, outputs = apply_attempt(state, Attempt("e3", ("a",), 1.0), decaying, T0 + 2 * DAY)
    change = outputs[0]
    assert isinstance(change, MasteryChange)
    assert change.p_after == pytest.approx(0.952576651660, abs=1e-12)
    assert change.level is Level.MASTERED
    assert not state.skills["a"].review_due
    assert not any(isinstance(o, SkillMastered) for o in outputs)  # it never stopped counting


def test_a_skill_can_set_its_own_mastery_threshold() -> None:
    # Two correct answers from the defaults: 0.692682926829, then 717/780 = 0.919230769231.
    lenient = BktParameters(mastery_threshold=0.9)
    state, _ = apply_attempt(EMPTY, Attempt("e1", ("a",), 1.0), lambda _: lenient, T0)
    state, outputs = apply_attempt(state, Attempt("e2", ("a",), 1.0), lambda _: lenient, T0)
    assert outputs[0].p_after == pytest.approx(0.919230769231, abs=1e-12)  # type: ignore[union-attr]
    assert [type(o) for o in outputs] == [MasteryChange, SkillMastered]
    assert state.skills["a"].level is Level.MASTERED

    state, _ = apply_attempt(EMPTY, Attempt("e1", ("a",), 1.0), defaults, T0)
    state, outputs = apply_attempt(state, Attempt("e2", ("a",), 1.0), defaults, T0)
    assert [type(o) for o in outputs] == [MasteryChange]
    assert state.skills["a"].level is Level.FAMILIAR


def test_many_attempts_without_mastery_is_struggling_once() -> None:
    state = EMPTY
    detected = []
    for n in range(STRUGGLING_ATTEMPTS + 5):
        state, outputs = apply_attempt(state, Attempt(f"e{n}", ("a",), 0.0), defaults, T0)
        detected += [o for o in outputs if isinstance(o, StrugglingDetected)]
    assert detected == [StrugglingDetected("a", "many_attempts", 10, "", "e9")]
    assert state.skills["a"].struggling


def test_repeated_errors_with_the_same_tag_are_struggling() -> None:
    tags = ["sign", "sign", "carry", "carry", "", "carry", "sign"]
    state = EMPTY
    detected = []
    for n, tag in enumerate(tags):
        state, outputs = apply_attempt(state, Attempt(f"e{n}", ("a",), 0.0, tag), defaults, T0)
        detected += [o for o in outputs if isinstance(o, StrugglingDetected)]
    # "sign" twice, then "carry" restarts the run; an untagged error leaves it; third "carry".
    assert detected == [StrugglingDetected("a", "repeated_error", 3, "carry", "e5")]


def test_a_correct_answer_ends_a_run_of_tagged_errors() -> None:
    state = EMPTY
    for n, (score, tag) in enumerate([(0.0, "sign"), (0.0, "sign"), (1.0, ""), (0.0, "sign")]):
        state, outputs = apply_attempt(state, Attempt(f"e{n}", ("a",), score, tag), defaults, T0)
        assert not any(isinstance(o, StrugglingDetected) for o in outputs)
    assert state.skills["a"].error_streak == 1
    assert not state.skills["a"].struggling


def test_a_teacher_override_wins_and_is_audited() -> None:
    override = TeacherOverride("o1", "a", 0.99, teacher_id="t-42", reason="oral exam")
    state, outputs = apply_override(EMPTY, override, defaults, T0)
    assert outputs == (
        MasteryOverridden("a", 0.3, 0.99, "oral exam", "t-42", "o1"),
        SkillMastered("a", 0.99, "o1"),
    )
    skill = state.skills["a"]
    assert skill.effective == 0.99
    assert skill.level is Level.MASTERED
    assert skill.override is not None
    assert (skill.override.teacher_id, skill.override.reason, skill.override.at) == (
        "t-42",
        "oral exam",
        T0,
    )


def test_an_override_stands_until_evidence_contradicts_it_by_more_than_half() -> None:
    # Model from the teacher's 0.99 with the defaults, three wrong answers:
    # 0.932710280374, 0.670648030496 (differences 0.057, 0.319: the override stands),
    # 0.282601676021 (difference 0.707 > 0.5: the override is lifted, the model is reported).
    state, _ = apply_override(EMPTY, TeacherOverride("o1", "a", 0.99), defaults, T0)
    reported = []
    for n in range(3):
        state, outputs = apply_attempt(state, Attempt(f"e{n}", ("a",), 0.0), defaults, T0)
        change = outputs[0]
        assert isinstance(change, MasteryChange)
        reported.append(change.p_after)
    assert reported[:2] == [0.99, 0.99]
    assert reported[2] == pytest.approx(0.282601676021, abs=1e-12)
    assert state.skills["a"].override is None
    assert state.skills["a"].level is Level.PRACTICING


def test_an_override_below_mastery_resets_nothing_it_should_not() -> None:
    state = EMPTY
    for n in range(3):
        state, _ = apply_attempt(state, Attempt(f"e{n}", ("a",), 1.0), defaults, T0)
    assert state.skills["a"].mastered
    state, outputs = apply_override(state, TeacherOverride("o1", "a", 0.5), defaults, T0)
    assert [type(o) for o in outputs] == [MasteryOverridden]
    assert state.skills["a"].level is Level.PRACTICING
    assert state.skills["a"].attempts == 3


@pytest.mark.parametrize(("skill", "p"), [("", 0.5), ("a", -0.1), ("a", 1.1), ("a", float("nan"))])
def test_invalid_overrides_are_refused(skill: str, p: float) -> None:
    with pytest.raises(InvalidAttempt):
        TeacherOverride("o1", skill, p)
