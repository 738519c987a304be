"""The demo district that `make run` loads is what the simulator generates (its README says how)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from trellis.simulator.district import DistrictConfig, catalog_records
from trellis.simulator.export import write_simulation
from trellis.simulator.learners import BehaviourConfig
from trellis.simulator.load import make_district
from trellis.simulator.simulation import simulate

DEMO = Path(__file__).resolve().parents[3] / "deploy" / "local" / "demo"
FILES = ("catalog.json", "roster.json", "activity.json", "truth.csv", "train.csv", "test.csv")


def test_demo_district_is_generated_by_the_simulator(tmp_path: Path) -> None:
    simulation = simulate(
        DistrictConfig(seed=2026, learners=24),
        BehaviourConfig(days=14, start=datetime(2026, 9, 7, tzinfo=UTC), event_prefix="demo-"),
    )
    write_simulation(simulation, tmp_path)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), name
    learners = {learner.learner_id for learner in simulation.district.learners}
    assert "stu-001" in learners  # the example call that `make run` prints


def test_load_district_shares_the_demo_catalog() -> None:
    demo = simulate(DistrictConfig(seed=2026, learners=24), BehaviourConfig(days=1)).catalog
    load = catalog_records(make_district(2_000, seed=2026))
    assert load == demo
