"""The next-activities policy on a hand-made catalog (tests/unit/recommender/fixtures.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.recommender.fixtures import CATALOG, mastered, practicing, state
from trellis.recommender.model import (
    AUDIO,
    REVIEW_DUE,
    Catalog,
    Item,
    LearnerState,
    Pin,
    Profile,
    Recommendation,
    Resource,
    Skill,
    SkillState,
)
from trellis.recommender.policy import (
    R_ACCELERATION,
    R_ACCOMMODATION,
    R_BROADEN,
    R_DIAGNOSTIC,
    R_ESTIMATED,
    R_INTEREST,
    R_OUTSIDE_BAND,
    R_PIN,
    R_REVIEW,
    R_SUPPORT_EASIER,
    R_SUPPORT_MODALITY,
    R_SUPPORT_PREREQUISITE,
    R_TARGET_BAND,
    PolicyConfig,
    candidate_items,
    estimate_success,
    frontier,
    mastered_skills,
    recommend,
)

NO_BROADEN = PolicyConfig(broaden_every=0)
EMPTY = Profile()


def rec(
    learner: LearnerState,
    profile: Profile = EMPTY,
    *,
    predictions: dict[str, float] | None = None,
    k: int = 0,
    config: PolicyConfig = NO_BROADEN,
) -> Recommendation:
    return recommend(
        CATALOG,
        learner,
        profile,
        tenant_id="t",
        learner_id="l",
        predictions=predictions,
        k=k,
        config=config,
    )


def flat_predictions(p: float) -> dict[str, float]:
    return {item_id: p for item_id in CATALOG.items}


def banded_predictions() -> dict[str, float]:
    """Only the `-mid` and `-open` items are in the band (0.7); easy 0.95, hard 0.3, drill 0.72."""
    out = {}
    for item_id in CATALOG.items:
        suffix = item_id.rsplit("-", 1)[1]
        out[item_id] = {"easy": 0.95, "mid": 0.7, "open": 0.75, "hard": 0.3, "drill": 0.72}[suffix]
    return out


def test_frontier_is_unmastered_skills_whose_prerequisites_are_mastered() -> None:
    learner = state(mastered("count"), practicing("add"))
    assert frontier(CATALOG, learner, NO_BROADEN) == ["add", "shapes"]


def test_teacher_override_to_mastered_counts_and_to_not_mastered_stands() -> None:
    # While an override stands, the mastery service reports the teacher's value.
    learner = state(SkillState("count", 0.99, "practicing", attempts=1, overridden=True))
    assert mastered_skills(CATALOG, learner, NO_BROADEN)["count"] == "override"
    assert "add" in frontier(CATALOG, learner, NO_BROADEN)
    # A teacher who says "not mastered" is not overruled by acceleration from a dependent skill.
    learner = state(
        SkillState("count", 0.1, "practicing", attempts=1, overridden=True), mastered("add")
    )
    assert "count" not in mastered_skills(CATALOG, learner, NO_BROADEN)
    assert "count" in frontier(CATALOG, learner, NO_BROADEN)


def test_acceleration_past_skills_shown_mastered() -> None:
    learner = state(mastered("multiply"))
    how = mastered_skills(CATALOG, learner, NO_BROADEN)
    assert how["count"] == "implied_by:multiply" and how["add"] == "implied_by:multiply"
    assert frontier(CATALOG, learner, NO_BROADEN) == ["fractions", "shapes", "subtract"]
    r = rec(learner, predictions=banded_predictions(), k=5)
    assert not {o.skill_id for o in r.options} & {"count", "add", "multiply"}
    subtract = [o for o in r.options if o.skill_id == "subtract"]
    assert subtract and R_ACCELERATION in subtract[0].codes


@pytest.mark.parametrize(
    "learner",
    [
        state(mastered("count"), practicing("add")),
        state(mastered("count"), mastered("add"), practicing("multiply", struggling=True)),
        state(practicing("count", 0.3)),
        state(mastered("multiply"), practicing("fractions", 0.6)),
        state(mastered("shapes"), practicing("count", 0.9, struggling=True)),
    ],
)
@pytest.mark.parametrize("p", [None, 0.3, 0.7, 0.95])
def test_no_recommendation_whose_prerequisites_are_unmastered(
    learner: LearnerState, p: float | None
) -> None:
    predictions = flat_predictions(p) if p is not None else None
    r = rec(learner, Profile(interests=("music",)), predictions=predictions, k=6)
    assert r.options
    done = mastered_skills(CATALOG, learner, NO_BROADEN)
    for option in r.options:
        activity = CATALOG.items.get(option.activity_id) or CATALOG.resources[option.activity_id]
        for skill_id in activity.skills:
            assert set(CATALOG.prerequisites(skill_id)) <= set(done), option


def test_pins_come_first_in_the_teachers_order() -> None:
    pins = (Pin("fractions-hard", "item", note="test prep"), Pin("shapes-text", "resource"))
    r = rec(state(mastered("count")), Profile(pins=pins), predictions=banded_predictions())
    assert [o.activity_id for o in r.options[:2]] == ["fractions-hard", "shapes-text"]
    assert all(R_PIN in o.codes for o in r.options[:2])
    assert R_PIN not in r.options[2].codes
    assert r.options[0].explanation == "Pinned by the teacher (test prep)."


def test_pins_beyond_k_are_cut_and_pins_breaking_accommodations_are_dropped() -> None:
    pins = (Pin("add-drill", "item"), Pin("add-mid", "item"), Pin("add-text", "resource"))
    profile = Profile(accommodations=("extended_time", "text_to_speech"), pins=pins)
    r = rec(state(mastered("count")), profile, predictions=banded_predictions(), k=1)
    assert [o.activity_id for o in r.options] == ["add-mid"]


def test_extended_time_means_no_timed_items() -> None:
    # The timed drill is the item nearest the band's centre: without the accommodation it is chosen.
    predictions = {**flat_predictions(0.3), "add-drill": 0.72, "add-mid": 0.65}
    learner = state(mastered("count"))
    assert "add-drill" in [o.activity_id for o in rec(learner, predictions=predictions).options]
    r = rec(learner, Profile(accommodations=("extended_time",)), predictions=predictions, k=6)
    assert all(
        not CATALOG.items[o.activity_id].timed for o in r.options if o.activity_kind == "item"
    )
    assert "add-mid" in [o.activity_id for o in r.options]
    assert all(R_ACCOMMODATION in o.codes for o in r.options)


def test_text_to_speech_means_audio_capable_resources_only() -> None:
    profile = Profile(interests=("sports", "space", "music"), accommodations=("text_to_speech",))
    learner = state(mastered("count"), practicing("add", struggling=True))
    r = rec(learner, profile, predictions=banded_predictions(), k=8)
    resources = [
        CATALOG.resources[o.activity_id] for o in r.options if o.activity_kind == "resource"
    ]
    assert resources
    assert all(AUDIO in res.accessibility for res in resources)


def test_items_are_chosen_in_the_target_band() -> None:
    r = rec(state(mastered("count"), mastered("add")), predictions=banded_predictions(), k=3)
    items = [o for o in r.options if o.activity_kind == "item"]
    assert items
    for option in items:
        assert 0.6 <= option.predicted_success <= 0.85
        assert R_TARGET_BAND in option.codes


def test_band_is_a_setting() -> None:
    config = PolicyConfig(band_low=0.9, band_high=0.99, broaden_every=0)
    r = rec(state(mastered("count")), predictions=banded_predictions(), config=config, k=2)
    items = [o for o in r.options if o.activity_kind == "item"]
    assert items and all(o.predicted_success == 0.95 for o in items)


def test_outside_the_band_only_when_nothing_is_in_it() -> None:
    r = rec(state(mastered("count")), predictions=flat_predictions(0.3), k=2)
    items = [o for o in r.options if o.activity_kind == "item"]
    assert items and all(R_OUTSIDE_BAND in o.codes for o in items)


def test_options_are_distinct_by_skill_and_format() -> None:
    learner = state(*(mastered(s) for s in ("count", "add", "subtract", "shapes")))
    profile = Profile(interests=("music", "sports"), modality="video")
    r = rec(learner, profile, predictions=banded_predictions(), k=5)
    pairs = [(o.skill_id, o.format) for o in r.options]
    assert len(pairs) == 5 and len(set(pairs)) == 5


def test_repeats_a_skill_and_format_only_when_nothing_else_qualifies() -> None:
    catalog = Catalog.of(
        [Skill("only")],
        [Item("a", ("only",), 0, "multiple_choice"), Item("b", ("only",), 0, "multiple_choice")],
    )
    learner = state(practicing("only"))
    r = recommend(
        catalog,
        learner,
        Profile(),
        tenant_id="t",
        learner_id="l",
        config=NO_BROADEN,
        predictions={"a": 0.7, "b": 0.75},
        k=3,
    )
    assert sorted(o.activity_id for o in r.options) == ["a", "b"]


def test_a_new_learner_gets_a_short_diagnostic_that_splits_the_graph() -> None:
    r = rec(LearnerState(), k=3)
    diagnostic = [o for o in r.options if R_DIAGNOSTIC in o.codes]
    assert 1 <= len(diagnostic) <= 3
    # The first probe sits in the middle of the chain count→add→multiply→fractions: `add` settles
    # count below and subtract/multiply/fractions above.
    assert diagnostic[0].skill_id == "add"
    assert len({o.skill_id for o in diagnostic}) == len(diagnostic)
    assert all(o.activity_kind == "item" for o in diagnostic)
    assert "new learner" in r.explanation


def test_struggling_gets_support_not_harder_items() -> None:
    # `add` is mastered only by implication (shown by `subtract`, which builds on it): weak
    # evidence of its own, so it is worth revisiting.
    learner = state(
        mastered("count"),
        practicing("add", 0.6),
        mastered("subtract"),
        practicing("multiply", 0.4, struggling=True),
    )
    profile = Profile(modality="video")
    r = rec(learner, profile, predictions=banded_predictions(), k=3)
    codes = [c for o in r.options for c in o.codes]
    assert {R_SUPPORT_EASIER, R_SUPPORT_PREREQUISITE, R_SUPPORT_MODALITY} <= set(codes)
    easier = next(o for o in r.options if R_SUPPORT_EASIER in o.codes)
    assert easier.activity_id == "multiply-easy"
    prerequisite = next(o for o in r.options if R_SUPPORT_PREREQUISITE in o.codes)
    assert prerequisite.skill_id == "add"
    other = next(o for o in r.options if R_SUPPORT_MODALITY in o.codes)
    assert CATALOG.resources[other.activity_id].modality != "video"
    # Never a band item (harder) on the skill they struggle with.
    more = rec(learner, profile, predictions=banded_predictions(), k=10)
    assert not [o for o in more.options if o.skill_id == "multiply" and R_TARGET_BAND in o.codes]


def test_support_revisits_only_prerequisites_mastered_on_weak_evidence() -> None:
    struggling = practicing("multiply", 0.4, struggling=True)
    solid = rec(state(mastered("count"), mastered("add"), struggling), k=10)
    assert R_SUPPORT_PREREQUISITE not in {c for o in solid.options for c in o.codes}
    assert solid.options[0].codes[0] == R_SUPPORT_EASIER
    decayed = rec(
        state(mastered("count"), SkillState("add", 0.97, REVIEW_DUE, attempts=6), struggling), k=10
    )
    revisit = [o for o in decayed.options if R_SUPPORT_PREREQUISITE in o.codes]
    assert [o.skill_id for o in revisit] == ["add"]


def test_no_support_for_a_struggling_skill_taken_as_mastered_since() -> None:
    # Flagged struggling on `add`, then `multiply` shown mastered: `add` is implied, the flag is
    # stale, and the learner goes on to `fractions`.
    learner = state(
        mastered("count"),
        practicing("add", 0.5, struggling=True),
        mastered("multiply"),
    )
    r = rec(learner, k=10)
    codes = {c for o in r.options for c in o.codes}
    assert not codes & {R_SUPPORT_EASIER, R_SUPPORT_PREREQUISITE, R_SUPPORT_MODALITY}
    assert "struggling" not in r.explanation
    assert "fractions" in {o.skill_id for o in r.options}
    assert "add" not in {o.skill_id for o in r.options}


def test_with_a_goal_items_towards_it_come_before_a_calendar_review() -> None:
    learner = state(
        mastered("count"),
        mastered("add", days_since_practice=30.0),
        mastered("shapes", days_since_practice=40.0),
    )
    goal = Profile(goal_skills=("fractions",))
    band = flat_predictions(0.7)
    items = [
        o for o in rec(learner, goal, predictions=band, k=10).options if o.activity_kind == "item"
    ]
    # every item on the way to the goal (multiply, one per format) before the reviews, and the
    # frontier off the way (subtract) after them
    assert [o.skill_id for o in items[:8]] == ["multiply"] * 3 + ["shapes", "add"] + [
        "subtract"
    ] * 3
    assert all(R_REVIEW in o.codes for o in items[3:5])
    # Without a goal, a review keeps the second item slot; so does a review the mastery service
    # flags (recall decayed) with a goal.
    plain = [o for o in rec(learner, predictions=band, k=10).options if o.activity_kind == "item"]
    assert R_REVIEW in plain[1].codes
    decayed = state(mastered("count"), SkillState("add", 0.96, REVIEW_DUE, attempts=5))
    options = rec(decayed, goal, predictions=band, k=10).options
    items = [o for o in options if o.activity_kind == "item"]
    assert items[0].skill_id == "multiply" and R_REVIEW in items[1].codes


def test_spaced_review_of_decayed_mastered_skills() -> None:
    learner = state(
        SkillState("count", 0.96, REVIEW_DUE, attempts=5),
        mastered("shapes", days_since_practice=40.0),
        mastered("add", days_since_practice=2.0),
    )
    r = rec(learner, predictions=banded_predictions(), k=6)
    reviewed = {o.skill_id for o in r.options if R_REVIEW in o.codes}
    assert reviewed == {"count", "shapes"}


def test_resources_match_interests_and_modality() -> None:
    learner = state(mastered("count"))
    r = rec(learner, Profile(interests=("music",)), predictions=banded_predictions(), k=3)
    interest = [o for o in r.options if R_INTEREST in o.codes]
    assert interest and CATALOG.resources[interest[0].activity_id].interest_tags == ("music",)


def test_broadening_now_and_then_deterministically() -> None:
    config = PolicyConfig(broaden_every=5)
    profile = Profile(interests=("music",), modality="audio")
    learner = state(mastered("count"))
    runs = [
        recommend(
            CATALOG,
            learner,
            profile,
            tenant_id="t",
            learner_id=f"l{n}",
            config=config,
            predictions=banded_predictions(),
        )
        for n in range(400)
    ]
    for r in runs:
        pairs = [(o.skill_id, o.format) for o in r.options]
        assert len(pairs) == len(set(pairs))
    broadened = [r for r in runs if any(R_BROADEN in o.codes for o in r.options)]
    assert 40 <= len(broadened) <= 120  # about 1 in 5
    for r in broadened:
        option = next(o for o in r.options if R_BROADEN in o.codes)
        resource = CATALOG.resources[option.activity_id]
        assert "music" not in resource.interest_tags and resource.modality != "audio"
    again = recommend(
        CATALOG,
        learner,
        profile,
        tenant_id="t",
        learner_id="l0",
        config=config,
        predictions=banded_predictions(),
    )
    assert again == runs[0]


def test_every_option_has_reasons_and_a_sentence_and_the_id_is_deterministic() -> None:
    learner = state(mastered("count"), practicing("add"))
    a = rec(learner, Profile(interests=("space",)), predictions=banded_predictions())
    b = rec(learner, Profile(interests=("space",)), predictions=banded_predictions())
    assert a.recommendation_id == b.recommendation_id
    c = rec(learner, Profile(interests=("sports",)), predictions=banded_predictions())
    assert c.recommendation_id != a.recommendation_id
    for option in a.options:
        assert option.reasons and option.explanation.endswith(".")
    assert a.explanation


def test_without_predictions_the_estimate_is_marked() -> None:
    r = rec(state(mastered("count")), k=3)
    items = [o for o in r.options if o.activity_kind == "item"]
    assert items and all(R_ESTIMATED in o.codes for o in items)


def test_estimate_rises_with_mastery_and_falls_with_difficulty() -> None:
    item = Item("x", ("add",), 0.0)
    low = estimate_success(item, state(practicing("add", 0.1)), NO_BROADEN)
    high = estimate_success(item, state(practicing("add", 0.9)), NO_BROADEN)
    hard = estimate_success(Item("y", ("add",), 1.5), state(practicing("add", 0.9)), NO_BROADEN)
    assert low < high and hard < high
    assert estimate_success(item, state(practicing("add", 1.0)), NO_BROADEN) == pytest.approx(0.9)


def test_candidate_items_cover_frontier_review_and_support() -> None:
    learner = state(mastered("count"), practicing("add", struggling=True))
    ids = candidate_items(CATALOG, learner, Profile(accommodations=("extended_time",)), NO_BROADEN)
    assert "add-mid" in ids and "count-mid" in ids and "shapes-mid" in ids
    assert "fractions-mid" not in ids and "add-drill" not in ids


def test_everything_mastered_gives_an_explained_empty_answer() -> None:
    learner = state(*(mastered(s.skill_id) for s in CATALOG.skills.values()))
    r = rec(learner, predictions=banded_predictions())
    assert r.options == () and "Nothing to recommend" in r.explanation


def test_resource_only_skill() -> None:
    catalog = Catalog.of([Skill("s")], [], [Resource("r", ("s",), ("art",), "video")])
    r = recommend(
        catalog,
        state(practicing("s")),
        Profile(interests=("art",)),
        tenant_id="t",
        learner_id="l",
        config=NO_BROADEN,
    )
    assert [o.activity_id for o in r.options] == ["r"]


def test_the_same_pin_twice_is_offered_once() -> None:
    pins = (Pin("add-mid", "item"), Pin("add-mid", "item"))
    r = rec(state(mastered("count")), Profile(pins=pins), predictions=banded_predictions())
    assert [o.activity_id for o in r.options].count("add-mid") == 1


def test_the_id_is_stable_within_a_day_of_no_practice() -> None:
    def at(days: float) -> str:
        learner = state(mastered("count", days_since_practice=days))
        return rec(learner, predictions=banded_predictions()).recommendation_id

    assert at(3.1) == at(3.9) != at(4.2)


_SKILL_IDS = sorted(CATALOG.skills)


@given(
    st.dictionaries(
        st.sampled_from(_SKILL_IDS),
        st.tuples(st.floats(0, 1), st.integers(0, 20), st.booleans(), st.booleans()),
    ),
    st.sets(st.sampled_from(["extended_time", "text_to_speech"])),
    st.sets(st.sampled_from(["music", "sports", "space"])),
    st.integers(1, 6),
    st.integers(0, 10_000),
)
def test_policy_invariants_on_random_learners(
    skills: dict[str, tuple[float, int, bool, bool]],
    accommodations: set[str],
    interests: set[str],
    k: int,
    seed: int,
) -> None:
    learner = LearnerState.of(
        *(
            SkillState(s, p, "mastered" if p >= 0.95 else "practicing", n, struggling, overridden)
            for s, (p, n, struggling, overridden) in skills.items()
        )
    )
    profile = Profile(tuple(sorted(interests)), "video", tuple(sorted(accommodations)))
    predictions = {i: (hash((i, seed)) % 100) / 100 for i in CATALOG.items}
    r = recommend(
        CATALOG,
        learner,
        profile,
        tenant_id="t",
        learner_id=f"l{seed}",
        predictions=predictions,
        k=k,
    )
    assert len(r.options) <= k
    assert len({o.activity_id for o in r.options}) == len(r.options)
    done = mastered_skills(CATALOG, learner, PolicyConfig())
    for option in r.options:
        assert option.reasons and option.explanation
        if option.activity_kind == "item":
            item = CATALOG.items[option.activity_id]
            assert not (item.timed and "extended_time" in accommodations)
            skills_of = item.skills
            if R_TARGET_BAND in option.codes:
                assert 0.6 <= option.predicted_success <= 0.85
        else:
            resource = CATALOG.resources[option.activity_id]
            assert "text_to_speech" not in accommodations or AUDIO in resource.accessibility
            skills_of = resource.skills
        if R_DIAGNOSTIC not in option.codes:
            for skill_id in skills_of:
                assert set(CATALOG.prerequisites(skill_id)) <= set(done)
