"""The learner profile fold (`trellis.mastery.domain.apply_profile`) and the class list, with
literal values; and their stored form."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from trellis.mastery.adapters.state_codec import decode_state, encode_state
from trellis.mastery.domain import (
    DEFAULT,
    EMPTY,
    PINS_LIMIT,
    REFLECTIONS_LIMIT,
    AssignActivity,
    Attempt,
    DeclareInterests,
    Goal,
    Pin,
    Profile,
    Reflection,
    SetAccommodations,
    SetGoal,
    SetPreference,
    SubmitReflection,
    apply_attempt,
    apply_profile,
    erasure_covers,
    event_digest,
    note_class,
)

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


def test_goals_are_kept_one_per_id_in_the_order_first_set() -> None:
    state = apply_profile(EMPTY, "e1", SetGoal(Goal("g1", "fractions.add", "Add", "2026-12-01")))
    state = apply_profile(state, "e2", SetGoal(Goal("g2", "fractions.mul", "Multiply")))
    state = apply_profile(state, "e3", SetGoal(Goal("g1", "fractions.add", "Add fast", "")))
    assert state.profile.goals == (
        Goal("g1", "fractions.add", "Add fast", ""),
        Goal("g2", "fractions.mul", "Multiply", ""),
    )
    assert state.seen_digests == b"".join(event_digest(e) for e in ("e1", "e2", "e3"))
    assert state.recent == ()  # no outputs: the outputs window keeps attempts' outputs


def test_interests_and_accommodations_are_replaced_by_the_latest_declaration() -> None:
    state = apply_profile(EMPTY, "e1", DeclareInterests(("space", "music", "space")))
    state = apply_profile(state, "e2", SetAccommodations(("extended_time",)))
    assert (state.profile.interests, state.profile.accommodations) == (
        ("space", "music"),
        ("extended_time",),
    )
    state = apply_profile(state, "e3", DeclareInterests(("football",)))
    state = apply_profile(state, "e4", SetAccommodations(()))
    assert (state.profile.interests, state.profile.accommodations) == (("football",), ())


def test_preferences_keep_the_latest_non_empty_value_of_each() -> None:
    state = apply_profile(EMPTY, "e1", SetPreference("video", "steady"))
    state = apply_profile(state, "e2", SetPreference("", "slower"))
    assert (state.profile.modality, state.profile.pace) == ("video", "slower")
    state = apply_profile(state, "e3", SetPreference("text", ""))
    assert (state.profile.modality, state.profile.pace) == ("text", "slower")


def test_pins_are_one_per_activity_most_recent_last_and_bounded() -> None:
    state = apply_profile(EMPTY, "e1", AssignActivity(Pin("item-1", "item", "a", "try this")))
    state = apply_profile(state, "e2", AssignActivity(Pin("res-9", "resource", "b", "")))
    state = apply_profile(state, "e3", AssignActivity(Pin("item-1", "item", "a", "again")))
    assert state.profile.pins == (
        Pin("res-9", "resource", "b", ""),
        Pin("item-1", "item", "a", "again"),
    )
    for n in range(PINS_LIMIT + 5):
        state = apply_profile(state, f"p{n}", AssignActivity(Pin(f"x{n}")))
    assert len(state.profile.pins) == 50
    assert state.profile.pins[0].activity_id == "x5"
    assert state.profile.pins[-1].activity_id == "x54"


def test_reflections_keep_the_last_twenty() -> None:
    state = EMPTY
    for n in range(REFLECTIONS_LIMIT + 3):
        reflection = Reflection(f"r{n}", f"text {n}", "a", 0.5, T0)
        state = apply_profile(state, f"e{n}", SubmitReflection(reflection))
    assert len(state.profile.reflections) == 20
    assert [r.reflection_id for r in state.profile.reflections[:2]] == ["r3", "r4"]
    assert state.profile.reflections[-1] == Reflection("r22", "text 22", "a", 0.5, T0)


def test_a_seen_profile_event_changes_nothing() -> None:
    state = apply_profile(EMPTY, "e1", DeclareInterests(("space",)))
    assert apply_profile(state, "e1", DeclareInterests(("music",))) is state
    # Profile and attempts share one dedup window.
    after, _ = apply_attempt(state, Attempt("e2", ("a",), 1.0), lambda _: DEFAULT, T0)
    assert after.profile.interests == ("space",)
    assert apply_profile(after, "e2", DeclareInterests(("music",))) is after


def test_classes_are_a_sorted_set() -> None:
    state = note_class(note_class(note_class(EMPTY, "7b"), "7a"), "7b")
    assert state.class_ids == ("7a", "7b")
    assert note_class(state, "") is state
    assert note_class(state, "7a") is state


def test_an_erasure_covers_events_up_to_its_time() -> None:
    later = datetime(2026, 9, 2, tzinfo=UTC)
    assert erasure_covers(later, T0)
    assert erasure_covers(T0, T0)
    assert not erasure_covers(T0, later)
    assert not erasure_covers(None, T0)


def test_profile_and_classes_round_trip_in_storage() -> None:
    state = apply_profile(EMPTY, "e1", SetGoal(Goal("g1", "a", "Add", "2026-12-01")))
    state = apply_profile(state, "e2", SubmitReflection(Reflection("r1", "hard", "a", None, T0)))
    state = apply_profile(state, "e3", SubmitReflection(Reflection("r2", "ok", "", 0.25, T0)))
    state = apply_profile(state, "e4", DeclareInterests(("space",)))
    state = apply_profile(state, "e5", SetPreference("video", "faster"))
    state = apply_profile(state, "e6", SetAccommodations(("text_to_speech",)))
    state = apply_profile(state, "e7", AssignActivity(Pin("item-1", "item", "a", "note")))
    state = replace(note_class(state, "7a"), erased_before=T0)
    assert decode_state(encode_state(state)) == state
    assert state.profile == Profile(
        goals=(Goal("g1", "a", "Add", "2026-12-01"),),
        reflections=(Reflection("r1", "hard", "a", None, T0), Reflection("r2", "ok", "", 0.25, T0)),
        interests=("space",),
        modality="video",
        pace="faster",
        accommodations=("text_to_speech",),
        pins=(Pin("item-1", "item", "a", "note"),),
    )


def test_a_format_2_state_reads_with_an_empty_profile() -> None:
    stored = b'{"v":2,"skills":{},"seen":["e1"],"recent":[]}'
    state = decode_state(stored)
    assert state.profile == Profile() and state.class_ids == ()
    assert state.seen_digests == event_digest("e1")
