"""BKT domain: hand-computed values, duplicates, partial credit, several skills, properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trellis.mastery.domain import (
    DEFAULT,
    DIGEST_BYTES,
    EMPTY,
    MASTERY_THRESHOLD,
    RECENT_OUTPUTS_LIMIT,
    SEEN_EVENT_IDS_LIMIT,
    Attempt,
    BktParameters,
    InvalidAttempt,
    LearnerState,
    Level,
    MasteryChange,
    SkillMastered,
    apply_attempt,
    event_digest,
    level_for,
    posterior,
    update,
)

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


def defaults(_skill: str) -> BktParameters:
    return DEFAULT


def attempt(event_id: str, score: float, *skills: str) -> Attempt:
    return Attempt(event_id=event_id, skill_ids=skills or ("fractions.add",), score=score)


# Hand computation from the defaults (prior 0.3, learn 0.1, guess 0.2, slip 0.1, forget 0):
#   correct: posterior = 0.3*0.9 / (0.3*0.9 + 0.7*0.2) = 0.27/0.41 = 27/41
#            after learning = 27/41 + (14/41)*0.1 = 142/205 = 0.692682926829...
#   wrong:   posterior = 0.3*0.1 / (0.3*0.1 + 0.7*0.8) = 0.03/0.59 = 3/59
#            after learning = 3/59 + (56/59)*0.1 = 43/295 = 0.145762711864...
#   half:    posterior = (27/41 + 3/59)/2 = 858/2419; after = 858/2419 + (1561/2419)*0.1
#            = 10141/24190 = 0.419222819346...
AFTER_CORRECT = Fraction(142, 205)
AFTER_WRONG = Fraction(43, 295)
AFTER_HALF = Fraction(10141, 24190)


def test_one_correct_attempt_from_defaults() -> None:
    state, outputs = apply_attempt(EMPTY, attempt("e1", 1.0), defaults, T0)

    assert float(AFTER_CORRECT) == pytest.approx(0.6926829268, abs=1e-10)
    assert outputs == (
        MasteryChange(
            skill="fractions.add",
            p_before=0.3,
            p_after=pytest.approx(float(AFTER_CORRECT), abs=1e-15),  # type: ignore[arg-type]
            level=Level.PRACTICING,
            attempts=1,
            model_version="default-v1",
            cause_event_id="e1",
        ),
    )
    skill = state.skills["fractions.add"]
    assert skill.p_mastered == pytest.approx(0.692682926829, abs=1e-12)
    assert skill.attempts == 1
    assert skill.last_event_time == T0
    assert skill.model_version == "default-v1"


def test_one_wrong_attempt_from_defaults() -> None:
    state, _ = apply_attempt(EMPTY, attempt("e1", 0.0), defaults, T0)
    assert state.skills["fractions.add"].p_mastered == pytest.approx(0.145762711864, abs=1e-12)
    assert float(AFTER_WRONG) == pytest.approx(0.145762711864, abs=1e-12)


def test_partial_credit_mixes_the_two_posteriors_by_score() -> None:
    state, outputs = apply_attempt(EMPTY, attempt("e1", 0.5), defaults, T0)
    assert state.skills["fractions.add"].p_mastered == pytest.approx(0.419222819346, abs=1e-12)
    assert float(AFTER_HALF) == pytest.approx(0.419222819346, abs=1e-12)
    assert outputs[0].p_after == pytest.approx(float(AFTER_HALF), abs=1e-15)  # type: ignore[union-attr]


def test_second_correct_attempt_continues_from_the_first() -> None:
    # p = 142/205: posterior = p*0.9 / (p*0.9 + (63/205)*0.2) = 127.8/140.4 = 71/78
    # after = 71/78 + (7/78)*0.1 = 717/780 = 0.919230769...
    state, _ = apply_attempt(EMPTY, attempt("e1", 1.0), defaults, T0)
    state, outputs = apply_attempt(state, attempt("e2", 1.0), defaults, T0 + timedelta(minutes=1))

    change = outputs[0]
    assert isinstance(change, MasteryChange)
    assert change.p_before == pytest.approx(float(AFTER_CORRECT), abs=1e-15)
    assert change.p_after == pytest.approx(float(Fraction(717, 780)), abs=1e-15)
    assert change.level is Level.FAMILIAR
    assert change.attempts == 2
    assert state.skills["fractions.add"].last_event_time == T0 + timedelta(minutes=1)


def test_crossing_the_threshold_emits_skill_mastered_once() -> None:
    state = EMPTY
    crossings = []
    for n in range(6):
        state, outputs = apply_attempt(state, attempt(f"e{n}", 1.0), defaults, T0)
        crossings += [o for o in outputs if isinstance(o, SkillMastered)]
    # 0.6927, 0.9192, 0.9828, ...: the third correct answer crosses 0.95, and only that one.
    assert [c.cause_event_id for c in crossings] == ["e2"]
    assert crossings[0].p_mastered >= MASTERY_THRESHOLD
    assert state.skills["fractions.add"].level is Level.MASTERED


def test_a_duplicate_changes_nothing_and_returns_the_same_outputs() -> None:
    first_state, first_outputs = apply_attempt(EMPTY, attempt("e1", 1.0), defaults, T0)
    again_state, again_outputs = apply_attempt(
        first_state, attempt("e1", 1.0), defaults, T0 + timedelta(hours=1)
    )
    assert again_state is first_state
    assert again_outputs == first_outputs
    assert again_state.skills["fractions.add"].attempts == 1


def test_a_duplicate_whose_outputs_were_forgotten_is_still_dropped() -> None:
    state, _ = apply_attempt(EMPTY, attempt("old", 1.0), defaults, T0)
    for n in range(RECENT_OUTPUTS_LIMIT):
        state, _ = apply_attempt(state, attempt(f"e{n}", 0.0), defaults, T0)
    again, outputs = apply_attempt(state, attempt("old", 1.0), defaults, T0)
    assert again is state
    assert outputs == ()


def test_the_dedup_memory_is_bounded() -> None:
    state = EMPTY
    for n in range(SEEN_EVENT_IDS_LIMIT + 5):
        state, _ = apply_attempt(state, attempt(f"e{n}", 1.0), defaults, T0)
    assert len(state.seen_digests) == SEEN_EVENT_IDS_LIMIT * DIGEST_BYTES
    assert len(state.recent) == RECENT_OUTPUTS_LIMIT
    assert state.seen_digests[:DIGEST_BYTES] == event_digest("e5")
    assert state.has_seen("e5")
    assert state.has_seen(f"e{SEEN_EVENT_IDS_LIMIT + 4}")
    assert not state.has_seen("e4")


def test_a_multi_skill_item_updates_each_skill_with_its_own_parameters() -> None:
    easy = BktParameters(prior=0.5, learn=0.2, guess=0.25, slip=0.05, version="fitted-v7")

    def params(skill: str) -> BktParameters:
        return easy if skill == "b" else DEFAULT

    state, outputs = apply_attempt(EMPTY, attempt("e1", 1.0, "a", "b", "a"), params, T0)

    # b: posterior = 0.5*0.95 / (0.5*0.95 + 0.5*0.25) = 0.475/0.6 = 19/24;
    #    after = 19/24 + (5/24)*0.2 = 100/120 = 5/6
    assert [(o.skill, o.model_version) for o in outputs if isinstance(o, MasteryChange)] == [
        ("a", "default-v1"),
        ("b", "fitted-v7"),
    ]
    assert state.skills["a"].p_mastered == pytest.approx(float(AFTER_CORRECT), abs=1e-15)
    assert state.skills["b"].p_mastered == pytest.approx(5 / 6, abs=1e-15)
    assert state.skills["a"].attempts == 1  # a skill listed twice counts once
    assert state.skills["b"].model_version == "fitted-v7"


def test_forgetting_decays_the_prior_of_the_next_attempt_by_days_since_practice() -> None:
    # forget is per day: after one correct answer p = 142/205; two days later the next attempt
    # starts from 142/205 * 0.9**2 = 0.561073170731..., and a correct answer gives
    # posterior = 51759/60757, after learning 263294/303785 = 0.866711654624...
    forgetful = BktParameters(forget=0.1)
    state, _ = apply_attempt(EMPTY, attempt("e1", 1.0), lambda _: forgetful, T0)
    state, outputs = apply_attempt(
        state, attempt("e2", 1.0), lambda _: forgetful, T0 + timedelta(days=2)
    )
    change = outputs[0]
    assert isinstance(change, MasteryChange)
    assert change.p_before == pytest.approx(0.692682926829, abs=1e-12)  # as stored
    assert change.p_after == pytest.approx(0.866711654624, abs=1e-12)
    assert change.p_after == pytest.approx(float(Fraction(263294, 303785)), abs=1e-15)


def test_the_state_given_is_never_mutated() -> None:
    state, _ = apply_attempt(EMPTY, attempt("e1", 1.0), defaults, T0)
    snapshot = dict(state.skills)
    apply_attempt(state, attempt("e2", 0.0), defaults, T0)
    assert dict(state.skills) == snapshot
    assert LearnerState() == EMPTY


@pytest.mark.parametrize(
    ("p", "attempts", "level"),
    [
        (0.3, 0, Level.NOT_STARTED),
        (0.69999, 3, Level.PRACTICING),
        (0.7, 3, Level.FAMILIAR),
        (0.94999, 3, Level.FAMILIAR),
        (0.95, 3, Level.MASTERED),
    ],
)
def test_levels(p: float, attempts: int, level: Level) -> None:
    assert level_for(p, attempts) is level


@pytest.mark.parametrize("score", [-0.1, 1.5, float("nan")])
def test_scores_outside_zero_one_are_refused(score: float) -> None:
    with pytest.raises(InvalidAttempt):
        Attempt("e1", ("a",), score)


def test_an_attempt_needs_an_event_id() -> None:
    with pytest.raises(InvalidAttempt):
        Attempt("", ("a",), 1.0)


@pytest.mark.parametrize("field", ["guess", "slip"])
def test_guess_and_slip_must_be_strictly_inside_zero_one(field: str) -> None:
    with pytest.raises(ValueError):
        BktParameters(**{field: 0.0})  # type: ignore[arg-type]


# Properties -------------------------------------------------------------------------------------

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
open_unit = st.floats(min_value=1e-6, max_value=1.0 - 1e-6, allow_nan=False)


@st.composite
def parameters(draw: st.DrawFn) -> BktParameters:
    return BktParameters(
        prior=draw(unit), learn=draw(unit), guess=draw(open_unit), slip=draw(open_unit),
        forget=draw(unit),
    )  # fmt: skip


@given(params=parameters(), scores=st.lists(unit, max_size=30))
def test_probabilities_stay_in_zero_one(params: BktParameters, scores: list[float]) -> None:
    state = EMPTY
    for n, score in enumerate(scores):
        event = attempt(f"e{n}", score, "a", "b")
        state, outputs = apply_attempt(state, event, lambda _: params, T0)
        for output in outputs:
            if isinstance(output, MasteryChange):
                assert 0.0 <= output.p_before <= 1.0
                assert 0.0 <= output.p_after <= 1.0
    assert all(0.0 <= s.p_mastered <= 1.0 for s in state.skills.values())


@given(p=unit, params=parameters())
def test_evidence_moves_the_estimate_the_right_way(p: float, params: BktParameters) -> None:
    # When a correct answer is more likely from a learner who knows the skill (guess + slip < 1),
    # a correct answer never lowers P(mastered) and a wrong one never raises it.
    if params.guess + params.slip < 1.0:
        assert posterior(p, 1.0, params) >= p - 1e-12
        assert posterior(p, 0.0, params) <= p + 1e-12
        assert posterior(p, 1.0, params) >= posterior(p, 0.5, params) - 1e-12


@given(p=unit, score=unit, params=parameters())
def test_without_forgetting_learning_never_lowers_the_posterior(
    p: float, score: float, params: BktParameters
) -> None:
    no_forget = BktParameters(
        prior=params.prior, learn=params.learn, guess=params.guess, slip=params.slip
    )
    assert update(p, score, no_forget) >= posterior(p, score, no_forget) - 1e-12


@given(
    scores=st.lists(unit, min_size=1, max_size=20),
    repeats=st.lists(st.integers(min_value=0, max_value=19), max_size=20),
)
def test_replaying_duplicates_gives_the_same_state(scores: list[float], repeats: list[int]) -> None:
    events = [attempt(f"e{n}", s) for n, s in enumerate(scores)]
    clean = EMPTY
    for event in events:
        clean, _ = apply_attempt(clean, event, defaults, T0)

    with_duplicates = EMPTY
    first_outputs = {}
    for n, event in enumerate(events):
        with_duplicates, outputs = apply_attempt(with_duplicates, event, defaults, T0)
        first_outputs[event.event_id] = outputs
        for r in repeats:
            if r <= n:  # re-deliver an earlier event
                again = events[r]
                with_duplicates, outputs = apply_attempt(with_duplicates, again, defaults, T0)
                # Outputs are kept for the last RECENT_OUTPUTS_LIMIT events applied.
                kept = n - r < RECENT_OUTPUTS_LIMIT
                assert outputs == (first_outputs[again.event_id] if kept else ())
    assert with_duplicates == clean
