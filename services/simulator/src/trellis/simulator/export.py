"""Writes a simulation to a directory: what ingest loads, the ground truth, the evaluation files.

catalog.json, roster.json, activity.json   protobuf JSON lists (`python -m trellis.ingest load DIR`)
truth.csv                                  per learner and step: the practiced skill's true state
train.csv, test.csv                        DESIGN.md §8 (disjoint learners)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from trellis.simulator.learners import TruthRow
from trellis.simulator.simulation import Simulation

EVALUATION_HEADER = ("user_id", "item_id", "timestamp", "correct", "skill_id")
TRUTH_HEADER = (
    "learner_id", "step", "event_id", "occurred_at", "skill_id", "item_id",
    "known_before", "known_after", "p_correct", "correct",
)  # fmt: skip


def write_json_list(path: Path, messages: Iterable[Message]) -> None:
    """The same text as `json.dumps([...], indent=1)`, written one message at a time."""
    with path.open("w") as f:
        first = True
        for message in messages:
            item = json.dumps(json_format.MessageToDict(message), indent=1)
            f.write(("[\n " if first else ",\n ") + item.replace("\n", "\n "))
            first = False
        f.write("[]\n" if first else "\n]\n")


def evaluation_rows(
    truth: Sequence[TruthRow], learners: frozenset[str], include: bool
) -> list[tuple[Any, ...]]:
    """Attempts of the learners in (`include`) or out of `learners`, in time order per learner."""
    rows = [t for t in truth if (t.learner_id in learners) == include]
    rows.sort(key=lambda t: (t.learner_id, t.occurred_at, t.step))
    return [
        (t.learner_id, t.item_id, int(t.occurred_at.timestamp()), int(t.correct), t.skill_id)
        for t in rows
    ]


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_simulation(simulation: Simulation, out: Path) -> dict[str, int]:
    """Writes every file; returns the number of records or rows of each."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_list(out / "catalog.json", simulation.catalog)
    write_json_list(out / "roster.json", simulation.roster)
    write_json_list(out / "activity.json", simulation.events)
    _write_csv(
        out / "truth.csv",
        TRUTH_HEADER,
        (
            (
                t.learner_id,
                t.step,
                t.event_id,
                t.occurred_at.isoformat(),
                t.skill_id,
                t.item_id,
                int(t.known_before),
                int(t.known_after),
                f"{t.p_correct:.4f}",
                int(t.correct),
            )
            for t in simulation.truth
        ),
    )
    train = evaluation_rows(simulation.truth, simulation.test_learners, include=False)
    test = evaluation_rows(simulation.truth, simulation.test_learners, include=True)
    _write_csv(out / "train.csv", EVALUATION_HEADER, train)
    _write_csv(out / "test.csv", EVALUATION_HEADER, test)
    return {
        "catalog": len(simulation.catalog),
        "roster": len(simulation.roster),
        "activity": len(simulation.events),
        "truth": len(simulation.truth),
        "train": len(train),
        "test": len(test),
    }
