"""The simulator's pure core: deterministic under a seed, and its learners behave as their latent
state says."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.protobuf import json_format

from trellis.common.pb.events.v1 import envelope_pb2
from trellis.ingest.catalog import find_cycle
from trellis.ingest.validation import validate_catalog, validate_event, validate_roster
from trellis.simulator.district import DistrictConfig, build_district
from trellis.simulator.export import EVALUATION_HEADER, write_simulation
from trellis.simulator.learners import BehaviourConfig
from trellis.simulator.load import check_loopback, make_events
from trellis.simulator.simulation import Simulation, simulate

CONFIG = DistrictConfig(seed=11, learners=60, schools=2, grades=("4", "5"), classes_per_grade=1)
BEHAVIOUR = BehaviourConfig(days=42)


@pytest.fixture(scope="module")
def simulation() -> Simulation:
    return simulate(CONFIG, BEHAVIOUR)


def _serialized(s: Simulation) -> list[bytes]:
    records = [*s.catalog, *s.roster, *s.events]
    return [r.SerializeToString(deterministic=True) for r in records]


def test_simulator_is_deterministic_under_a_seed(simulation: Simulation) -> None:
    again = simulate(CONFIG, BEHAVIOUR)
    assert _serialized(again) == _serialized(simulation)
    assert again.truth == simulation.truth
    assert again.test_learners == simulation.test_learners
    other = simulate(DistrictConfig(**{**CONFIG.__dict__, "seed": 12}), BEHAVIOUR)
    assert _serialized(other) != _serialized(simulation)


def test_simulator_known_skills_are_answered_correctly_more_often(simulation: Simulation) -> None:
    known = [t.correct for t in simulation.truth if t.known_before]
    unknown = [t.correct for t in simulation.truth if not t.known_before]
    p1, p0 = sum(known) / len(known), sum(unknown) / len(unknown)
    pooled = (sum(known) + sum(unknown)) / (len(known) + len(unknown))
    z = (p1 - p0) / math.sqrt(pooled * (1 - pooled) * (1 / len(known) + 1 / len(unknown)))
    assert p1 > p0 + 0.3
    assert z > 10  # two-proportion z-test: far beyond chance


def test_simulator_accelerators_outperform_strugglers(simulation: Simulation) -> None:
    kind = {learner.learner_id: learner.kind for learner in simulation.district.learners}
    rate: dict[str, list[int]] = {"struggler": [], "accelerator": []}
    for t in simulation.truth:
        if kind[t.learner_id] in rate:
            rate[kind[t.learner_id]].append(int(t.correct))
    assert rate["accelerator"] and rate["struggler"]
    mean = {k: sum(v) / len(v) for k, v in rate.items()}
    assert mean["accelerator"] > mean["struggler"] + 0.1


def test_simulator_records_are_valid_for_ingest(simulation: Simulation) -> None:
    now = datetime.now(UTC)
    for i, event in enumerate(simulation.events):
        assert validate_event(event, f"events[{i}]", CONFIG.tenant_id, now) == []
    for i, roster in enumerate(simulation.roster):
        assert validate_roster(roster, f"records[{i}]") == []
    for i, catalog in enumerate(simulation.catalog):
        assert validate_catalog(catalog, f"records[{i}]") == []
    ids = [e.event_id for e in simulation.events]
    assert len(set(ids)) == len(ids)


def test_simulator_catalog_is_a_dag_and_references_resolve(simulation: Simulation) -> None:
    district = simulation.district
    prerequisites = {s.skill_id: s.prerequisite_ids for s in district.skills}
    assert find_cycle(prerequisites) is None
    assert all(q in prerequisites for qs in prerequisites.values() for q in qs)
    assert all(s.case_uri.startswith("https://") for s in district.skills)
    items = {i.item_id for i in district.items}
    resources = {r.resource_id for r in district.resources}
    for event in simulation.events:
        if event.HasField("item_attempted"):
            assert event.item_attempted.item_id in items
        if event.HasField("resource_engaged"):
            assert event.resource_engaged.resource_id in resources


def test_simulator_behaviour_beyond_answers(simulation: Simulation) -> None:
    kinds = Counter(e.WhichOneof("payload") for e in simulation.events)
    for kind in ("resource_engaged", "goal_set", "reflection_submitted", "interest_declared"):
        assert kinds[kind] > 0, kind
    # Some devices deliver late: a learner's events arrive out of their time order.
    last: dict[str, int] = {}
    out_of_order = 0
    for e in simulation.events:
        seconds = e.occurred_at.seconds
        out_of_order += seconds < last.get(e.learner_id, 0)
        last[e.learner_id] = max(seconds, last.get(e.learner_id, 0))
    assert out_of_order > 0
    # Late joiners: some learners start well after the first day.
    first = {}
    for t in simulation.truth:
        first.setdefault(t.learner_id, t.occurred_at)
    start = BEHAVIOUR.start
    assert any((f - start).days >= 3 for f in first.values())


def test_simulator_district_shape() -> None:
    district = build_district(DistrictConfig())
    assert district.learners[0].learner_id == "stu-001"
    assert [c.class_id for c in district.classes] == ["c-5a", "c-5b"]
    assert {c.school_id for c in district.classes} == {"s-north"}
    assert {learner.kind for learner in district.learners} == {
        "typical",
        "struggler",
        "accelerator",
    }


def test_simulator_export_files(simulation: Simulation, tmp_path: Path) -> None:
    counts = write_simulation(simulation, tmp_path)
    activity = json.loads((tmp_path / "activity.json").read_text())
    assert len(activity) == counts["activity"]
    assert json_format.ParseDict(activity[0], envelope_pb2.Envelope()) == simulation.events[0]
    with (tmp_path / "train.csv").open() as f:
        train = list(csv.DictReader(f))
    with (tmp_path / "test.csv").open() as f:
        test = list(csv.DictReader(f))
    assert tuple(train[0]) == EVALUATION_HEADER
    assert len(train) == counts["train"] and len(test) == counts["test"]
    assert {r["user_id"] for r in train}.isdisjoint({r["user_id"] for r in test})
    assert len(train) + len(test) == len(simulation.truth)


def test_simulator_load_events_are_unique_and_loopback_only() -> None:
    events = make_events(500, learners=30, seed=3, run_id="r1")
    assert len(events) == 500
    assert len({e.event_id for e in events}) == 500
    assert len({e.learner_id for e in events[:60]}) >= 25  # interleaved across learners
    check_loopback("127.0.0.1:50051")
    check_loopback("localhost:50051")
    check_loopback("[::1]:50051")
    with pytest.raises(ValueError, match="loopback"):
        check_loopback("10.0.0.5:50051")


def test_simulator_multi_skill_items_need_every_skill() -> None:
    config = DistrictConfig(seed=5, learners=80, multi_skill_items=0.5)
    simulation = simulate(config, BehaviourConfig(days=28))
    multi = {i.item_id: i for i in simulation.district.items if i.extra_skill_ids}
    assert multi
    for item in multi.values():
        (prerequisite,) = item.extra_skill_ids
        assert prerequisite in simulation.district.skill_by_id[item.skill_id].prerequisite_ids
    # Without them, the district is the same as before.
    plain = build_district(DistrictConfig(seed=5, learners=80))
    assert [i.item_id for i in plain.items] == [i.item_id for i in simulation.district.items]
    attempts = [e.item_attempted for e in simulation.events if e.HasField("item_attempted")]
    assert any(len(a.skill_ids) == 2 for a in attempts)
    # One truth (and export) row per skill of each attempt.
    assert len(simulation.truth) == sum(len(a.skill_ids) for a in attempts)
    # Conjunctive: with the item's own skill known, an unknown prerequisite lowers success.
    by_step: dict[tuple[str, int], list[bool]] = {}
    outcome: dict[tuple[str, int], bool] = {}
    for t in simulation.truth:
        if t.item_id in multi:
            by_step.setdefault((t.learner_id, t.step), []).append(t.known_before)
            outcome[(t.learner_id, t.step)] = t.correct
    both = [outcome[k] for k, v in by_step.items() if v == [True, True]]
    own_only = [outcome[k] for k, v in by_step.items() if v == [True, False]]
    assert both and own_only
    assert sum(both) / len(both) > sum(own_only) / len(own_only) + 0.2
