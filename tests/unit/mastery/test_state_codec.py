"""The stored form of a learner state round-trips exactly, and refuses what it does not know."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trellis.mastery.adapters.state_codec import (
    MAGIC,
    StateFormatError,
    decode,
    decode_state,
    encode,
    encode_state,
)
from trellis.mastery.domain import (
    DEFAULT,
    EMPTY,
    AppliedEvent,
    Attempt,
    BktParameters,
    Goal,
    LearnerState,
    Level,
    MasteryChange,
    MasteryOverridden,
    Override,
    Profile,
    ReviewDue,
    SetGoal,
    SkillMastered,
    SkillState,
    StrugglingDetected,
    TeacherOverride,
    apply_attempt,
    apply_override,
    apply_profile,
    event_digest,
)

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


def test_empty_state_round_trips() -> None:
    assert decode_state(encode_state(EMPTY)) == EMPTY


@given(
    scores=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=40),
    skills=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3),
)
def test_states_round_trip_bit_for_bit(scores: list[float], skills: list[str]) -> None:
    state = EMPTY
    for n, score in enumerate(scores):
        attempt = Attempt(f"e{n}", tuple(skills), score)
        state, _ = apply_attempt(state, attempt, lambda _: DEFAULT, T0)
        decoded = decode_state(encode_state(state))
        assert decoded == state
        state = decoded  # continuing from the decoded state changes nothing


def test_outputs_of_a_replayed_duplicate_survive_storage() -> None:
    easy = BktParameters(prior=0.94, version="v9")
    state, outputs = apply_attempt(EMPTY, Attempt("e1", ("a",), 1.0), lambda _: easy, T0)
    assert len(outputs) == 2  # crosses the threshold: MasteryChange and SkillMastered
    stored = decode_state(encode_state(state))
    again, replayed = apply_attempt(stored, Attempt("e1", ("a",), 1.0), lambda _: easy, T0)
    assert again is stored
    assert replayed == outputs


@pytest.mark.parametrize(
    "data", [b"", b"not json", b'{"v": 99}', b'{"v": 1}', b'{"v":1,"skills":{"a":[1]}}']
)
def test_unknown_or_broken_formats_are_refused(data: bytes) -> None:
    with pytest.raises(StateFormatError):
        decode_state(data)


def test_every_field_and_output_kind_round_trips() -> None:
    override = Override(0.97, "teacher-7", "observed in class", T0, "ovr-1")
    skill = SkillState(
        p_mastered=0.42,
        attempts=12,
        last_event_time=T0,
        model_version="fitted-v3",
        mastered=True,
        attempts_unmastered=3,
        struggling=True,
        error_tag="sign-error",
        error_streak=2,
        review_due=True,
        override=override,
    )
    outputs = (
        MasteryChange("a", 0.1, 0.2, Level.FAMILIAR, 4, "fitted-v3", "e1"),
        SkillMastered("a", 0.96, "e1"),
        StrugglingDetected("a", "repeated_error", 3, "sign-error", "e1"),
        MasteryOverridden("a", 0.2, 0.97, "observed", "teacher-7", "e1"),
        ReviewDue("b", 0.71, "e1"),
    )
    state = LearnerState(
        skills={"a": skill, "b": SkillState(p_mastered=0.3, attempts=0)},
        seen_digests=event_digest("e1") + event_digest("ünïcode-✓"),
        recent=(AppliedEvent("e1", outputs), AppliedEvent("tick-1", ())),
        profile=Profile(goals=(Goal("g1", "a", "Add", "2026-12-01"),), interests=("space",)),
        class_ids=("class-7a", "class-7b"),
        erased_before=T0 - timedelta(days=3),
    )
    encoded = encode_state(state)
    assert encoded[:1] == MAGIC
    assert decode_state(encoded) == state
    assert encode_state(decode_state(encoded)) == encoded  # stable bytes, memo or not


def test_a_format_3_json_state_reads_with_its_ids_as_digests() -> None:
    stored = (
        b'{"v":3,"skills":{"a":[0.5,2,"2026-09-01T08:00:00+00:00","default-v1",false,2,false,'
        b'"",0,false,null]},"seen":["e1","e2"],"recent":[["e2",[["u","a",0.3,0.5,"practicing",'
        b'2,"default-v1"]]]],"classes":["c1"]}'
    )
    state = decode_state(stored)
    assert state.has_seen("e1") and state.has_seen("e2") and not state.has_seen("e3")
    assert state.skills["a"].attempts == 2
    assert state.recent[0].outputs[0].cause_event_id == "e2"
    assert state.class_ids == ("c1",)
    assert decode_state(encode_state(state)) == state


def test_a_cut_or_padded_binary_state_is_refused() -> None:
    state, _ = apply_attempt(EMPTY, Attempt("e1", ("a",), 1.0), lambda _: DEFAULT, T0)
    encoded = encode_state(state)
    for broken in (encoded[:-1], encoded[: len(encoded) // 2], encoded + b"\x00", MAGIC + b"\x09"):
        with pytest.raises(StateFormatError):
            decode_state(broken)


def test_a_digest_match_across_two_digests_is_no_match() -> None:
    one, two = event_digest("e1"), event_digest("e2")
    state = LearnerState(seen_digests=one + two)
    straddling = (one + two)[4:12]
    assert state.seen_digests.find(straddling) == 4
    with mock.patch("trellis.mastery.domain.event_digest", return_value=straddling):
        assert not state.has_seen("anything")


def params(_: str) -> BktParameters:
    return DEFAULT


def test_a_state_encoded_against_its_previous_one_has_the_same_bytes() -> None:
    """The parts of the previous encoding (as written, or as read back) are reused only for the
    values the new state still holds: the bytes are those of a fresh encoding."""
    one, _ = apply_attempt(EMPTY, Attempt("e1", ("a", "b"), 1.0), params, T0)
    two, _ = apply_attempt(one, Attempt("e2", ("b", "c"), 0.0, "sign"), params, T0)
    three, _ = apply_override(two, TeacherOverride("e3", "a", 0.97, "t-1", "seen"), params, T0)
    four = apply_profile(three, "e4", SetGoal(Goal("g1", "a", "Add")))
    previous = encode(one)
    for state in (two, three, four):
        for base in (previous, decode(previous.data)):
            encoded = encode(state, base)
            assert encoded.data == encode_state(state)
            assert decode_state(encoded.data) == state
        previous = encode(state, previous)
