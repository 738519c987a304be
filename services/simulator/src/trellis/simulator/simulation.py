"""A whole district simulated: events in the order sources send them, ground truth, and the
evaluation export (DESIGN.md §8). Pure: files are written by `trellis.simulator.export`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trellis.common.pb.events.v1 import catalog_pb2, envelope_pb2, roster_pb2
from trellis.simulator.district import (
    District,
    DistrictConfig,
    build_district,
    catalog_records,
    roster_records,
)
from trellis.simulator.learners import BehaviourConfig, LearnerRun, TimedEvent, TruthRow


@dataclass(frozen=True)
class Simulation:
    district: District
    catalog: list[catalog_pb2.CatalogRecord]
    roster: list[roster_pb2.RosterRecord]
    # Activity in delivery order: by the time the source sends each event, so the sessions of
    # offline devices arrive late and out of order.
    events: list[envelope_pb2.Envelope]
    truth: list[TruthRow]  # per learner, in step order
    test_learners: frozenset[str]


def split_learners(district: District, test_fraction: float) -> frozenset[str]:
    """Disjoint train and test learners: a seeded choice of `test_fraction` of them."""
    rng = np.random.default_rng([district.config.seed, 2])
    ids = [learner.learner_id for learner in district.learners]
    n_test = round(len(ids) * test_fraction)
    return frozenset(str(x) for x in rng.choice(ids, size=n_test, replace=False))


def simulate(
    config: DistrictConfig,
    behaviour: BehaviourConfig,
    test_fraction: float = 0.2,
    progress: Callable[[int], None] | None = None,
) -> Simulation:
    """`progress(n)` is called after each learner with the number of events made so far."""
    district = build_district(config)
    timed: list[TimedEvent] = []
    truth: list[TruthRow] = []
    for learner in district.learners:
        run = LearnerRun(district, learner, behaviour)
        timed.extend(run.events())
        truth.extend(run.truth_rows)
        if progress is not None:
            progress(len(timed))
    timed.sort(key=lambda e: (e.deliver_at, e.learner_index, e.seq))
    return Simulation(
        district=district,
        catalog=catalog_records(district),
        roster=roster_records(district),
        events=[e.envelope for e in timed],
        truth=truth,
        test_learners=split_learners(district, test_fraction),
    )
