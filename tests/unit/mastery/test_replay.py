"""Replay core: rebuild state from activity records, compare it with a live state."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

from trellis.common.codec import encode_envelope, learner_key
from trellis.common.pb.events.v1 import activity_pb2, catalog_pb2, envelope_pb2
from trellis.mastery.adapters.state_codec import decode_state, encode_state
from trellis.mastery.catalog import CatalogView
from trellis.mastery.events import output_event_id
from trellis.mastery.replay import (
    SHOWN_CHARS,
    Difference,
    Record,
    compare,
    rebuild,
    report,
    report_lines,
)

TENANT = "district-a"


def _envelope(event_id: str, learner: str, seconds: int) -> envelope_pb2.Envelope:
    envelope = envelope_pb2.Envelope(event_id=event_id, tenant_id=TENANT, learner_id=learner)
    envelope.occurred_at.FromSeconds(1_790_000_000 + seconds)
    return envelope


def attempt(
    event_id: str, learner: str = "p1", skills: tuple[str, ...] = ("a",), correct: bool = True
) -> Record:
    envelope = _envelope(event_id, learner, seconds=len(event_id))
    envelope.item_attempted.CopyFrom(
        activity_pb2.ItemAttempted(item_id="item-1", skill_ids=skills, correct=correct)
    )
    return _record(envelope)


def erasure(event_id: str, learner: str, seconds: int) -> Record:
    envelope = _envelope(event_id, learner, seconds)
    envelope.learner_erasure_requested.SetInParent()
    return _record(envelope)


def _record(envelope: envelope_pb2.Envelope) -> Record:
    encoded = encode_envelope(envelope)
    return encoded.key, encoded.value, encoded.headers


STREAM = [
    attempt("e1"),
    attempt("e2", skills=("a", "b"), correct=False),
    attempt("e3", learner="p2"),
    attempt("e4", learner="p2", skills=("b",)),
]


def test_rebuild_applies_every_event_once_and_collects_output_ids() -> None:
    rebuilt = rebuild(STREAM, CatalogView())
    p1, p2 = learner_key(TENANT, "p1"), learner_key(TENANT, "p2")
    assert rebuilt.events == 4 and rebuilt.invalid == 0
    states = rebuilt.states
    attempts = {k: {s: v.attempts for s, v in st.skills.items()} for k, st in states.items()}
    assert attempts == {p1: {"a": 2, "b": 1}, p2: {"a": 1, "b": 1}}
    assert rebuilt.states[p1].has_seen("e1") and rebuilt.states[p1].has_seen("e2")
    assert output_event_id("e2", "mastery_updated", "b") in rebuilt.output_ids
    assert len(rebuilt.output_ids) == 5  # one update per skill per attempt


def test_redelivered_events_rebuild_the_same_state_as_a_clean_log() -> None:
    # What a crash does to the log the worker reads: events since the last commit come again.
    redelivered = [*STREAM[:3], STREAM[0], STREAM[1], *STREAM[2:]]
    clean, crashed = rebuild(STREAM, CatalogView()), rebuild(redelivered, CatalogView())
    assert compare(crashed.states, clean.states, crashed.erased, clean.erased) == []
    assert crashed.output_ids == clean.output_ids


def test_invalid_records_are_counted_and_skipped_as_the_worker_dead_letters_them() -> None:
    key, value, headers = attempt("e9")
    wrong_key = (learner_key(TENANT, "someone-else"), value, headers)
    rebuilt = rebuild([(key, b"\xff\xfenot an envelope", []), wrong_key, *STREAM], CatalogView())
    assert rebuilt.invalid == 2
    assert rebuilt.states == rebuild(STREAM, CatalogView()).states


def test_rebuild_takes_skills_from_the_catalog() -> None:
    catalog = CatalogView()
    catalog.apply(
        catalog_pb2.CatalogRecord(
            tenant_id=TENANT, item=catalog_pb2.Item(item_id="item-1", skill_ids=["c"])
        )
    )
    rebuilt = rebuild([attempt("e1", skills=())], catalog)
    assert list(rebuilt.states[learner_key(TENANT, "p1")].skills) == ["c"]


def test_an_erasure_deletes_the_state_and_leaves_a_marker() -> None:
    rebuilt = rebuild([*STREAM, erasure("x1", "p1", seconds=100)], CatalogView())
    p1 = learner_key(TENANT, "p1")
    assert p1 not in rebuilt.states
    assert rebuilt.erased == {p1: datetime.fromtimestamp(1_790_000_100, UTC)}
    assert output_event_id("x1", "learner_erased", "") in rebuilt.output_ids


def test_states_through_the_codec_compare_equal() -> None:
    rebuilt = rebuild(STREAM, CatalogView())
    stored = {k: decode_state(encode_state(s)) for k, s in rebuilt.states.items()}
    assert compare(stored, rebuilt.states, {}, {}) == []


def test_compare_names_the_learner_and_what_differs() -> None:
    replayed = rebuild(STREAM, CatalogView()).states
    p1, p2 = learner_key(TENANT, "p1"), learner_key(TENANT, "p2")
    one_attempt_lost = rebuild([STREAM[0], *STREAM[2:]], CatalogView()).states
    live = {p1: replace(one_attempt_lost[p1], class_ids=("class-7a",))}
    when = datetime(2026, 9, 1, tzinfo=UTC)
    differences = compare(live, replayed, {p2: when}, {})
    named = [(d.learner, d.part, d.name) for d in differences]
    assert named[:2] == [("district-a/p1", "skill", "a"), ("district-a/p1", "skill", "b")]
    # The lost event is also missing from the dedup window and from the outputs kept to re-send.
    assert ("district-a/p1", "field", "recent") in named
    assert ("district-a/p1", "field", "class_ids") in named
    assert named[-2:] == [("district-a/p2", "state", ""), ("district-a/p2", "erased", "")]
    skill_b = differences[1]
    assert skill_b.live == "absent" and skill_b.replayed.startswith("SkillState(")
    assert differences[-2].describe() == "district-a/p2: live absent != replayed present"
    [classes] = [d for d in differences if d.name == "class_ids"]
    assert classes.describe() == (
        "district-a/p1 field class_ids: live 1 entries, from #0: ('class-7a',) "
        "!= replayed 0 entries, from #0: ()"
    )


def test_long_sequences_are_shown_from_their_first_difference_and_cut() -> None:
    p1 = learner_key(TENANT, "p1")
    many = tuple(f"class-{n:03d}" for n in range(100))
    replayed = rebuild(STREAM, CatalogView()).states
    live = {**replayed, p1: replace(replayed[p1], class_ids=(*many[:50], "other", *many[51:]))}
    [difference] = compare(live, {**replayed, p1: replace(replayed[p1], class_ids=many)}, {}, {})
    assert difference.live.startswith("100 entries, from #50: ('other', 'class-051'")
    assert difference.replayed.startswith("100 entries, from #50: ('class-050', 'class-051'")
    assert len(difference.live) == SHOWN_CHARS and difference.live.endswith("…")


def test_a_single_float_bit_is_a_difference() -> None:
    replayed = rebuild(STREAM, CatalogView()).states
    p1 = learner_key(TENANT, "p1")
    skill = replayed[p1].skills["a"]
    nudged = replace(skill, p_mastered=math.nextafter(skill.p_mastered, 0.0))
    assert nudged.p_mastered != skill.p_mastered
    live = {**replayed, p1: replace(replayed[p1], skills={**replayed[p1].skills, "a": nudged})}
    assert [(d.part, d.name) for d in compare(live, replayed, {}, {})] == [("skill", "a")]


def test_report_as_json_document_and_lines() -> None:
    rebuilt = rebuild(STREAM, CatalogView())
    difference = Difference("district-a/p1", "skill", "a", "x", "y")
    document = report(rebuilt, 1, [difference])
    assert document == {
        "equal": False,
        "events": 4,
        "invalid_events": 0,
        "learners": {"live": 1, "replayed": 2},
        "differences": [
            {"learner": "district-a/p1", "part": "skill", "name": "a", "live": "x", "replayed": "y"}
        ],
    }
    assert report_lines(document) == [
        "4 events replayed (0 invalid); learners with state: live 1, replayed 2",
        "district-a/p1 skill a: live x != replayed y",
        "NOT equal: 1 differences",
    ]
    assert report_lines(report(rebuilt, 2, []))[-1] == "equal"
