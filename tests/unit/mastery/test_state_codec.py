"""The stored form of a learner state round-trips exactly, and refuses what it does not know."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trellis.mastery.adapters.state_codec import StateFormatError, decode_state, encode_state
from trellis.mastery.domain import DEFAULT, EMPTY, Attempt, BktParameters, apply_attempt

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
