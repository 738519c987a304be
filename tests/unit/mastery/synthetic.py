"""A small BKT data generator with known parameters, for testing `fit` and `evaluate` until the
simulator is available: learners practice skills in turn; each answer follows BKT, and, when
`item_spread` > 0, items shift the log-odds of a correct answer by minus their difficulty. With
`gap_days` > 0, each round of practice is followed by 0 to `gap_days` days without practice, over
which a known skill is forgotten with probability 1 - (1 - forget) ** days."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

COLUMNS = ("user_id", "item_id", "timestamp", "correct", "skill_id")


@dataclass(frozen=True)
class TrueSkill:
    prior: float
    learn: float
    guess: float
    slip: float
    forget: float  # per day; acts only with `gap_days`


SKILLS = {
    "s0": TrueSkill(0.2, 0.15, 0.2, 0.1, 0.0),
    "s1": TrueSkill(0.5, 0.05, 0.25, 0.15, 0.02),
    "s2": TrueSkill(0.1, 0.25, 0.15, 0.05, 0.1),
}


def difficulties(spread: float, items_per_skill: int = 10, seed: int = 0) -> dict[str, float]:
    """Item difficulties (logit scale): the same items, whatever the learners' seed."""
    rng = np.random.default_rng(seed)
    return {
        f"{s}-i{i}": float(rng.normal(0.0, spread)) if spread else 0.0
        for s in SKILLS
        for i in range(items_per_skill)
    }


def generate(
    learners: int,
    attempts_per_skill: int,
    seed: int,
    item_spread: float = 0.0,
    items_per_skill: int = 10,
    first_user: int = 0,
    item_seed: int = 0,
    gap_days: int = 0,
) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    difficulty = difficulties(item_spread, items_per_skill, item_seed)
    rows = []
    clock = 0
    for u in range(first_user, first_user + learners):
        known = {s: rng.random() < k.prior for s, k in SKILLS.items()}
        for _ in range(attempts_per_skill):
            for s, k in SKILLS.items():
                i = int(rng.integers(items_per_skill))
                p = (1.0 - k.slip) if known[s] else k.guess
                z = math.log(p / (1.0 - p)) - difficulty[f"{s}-i{i}"]
                correct = rng.random() < 1.0 / (1.0 + math.exp(-z))
                clock += 1
                rows.append(
                    {
                        "user_id": f"u{u}",
                        "item_id": f"{s}-i{i}",
                        "timestamp": str(clock),
                        "correct": "1" if correct else "0",
                        "skill_id": s,
                        "known_before": "1" if known[s] else "0",
                    }
                )
                if not known[s] and rng.random() < k.learn:
                    known[s] = True
            if gap_days:
                days = int(rng.integers(gap_days + 1))
                clock += days * 86_400
                for s, k in SKILLS.items():
                    if known[s] and rng.random() < 1.0 - (1.0 - k.forget) ** days:
                        known[s] = False
    return rows


def write(path: Path, rows: list[dict[str, str]], delimiter: str = ",") -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=COLUMNS, delimiter=delimiter, extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_truth(path: Path, rows: list[dict[str, str]]) -> Path:
    """The true state before each attempt, in the simulator's `truth.csv` columns."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["learner_id", "occurred_at", "skill_id", "item_id", "known_before"])
        for r in rows:
            when = datetime.fromtimestamp(int(r["timestamp"]), UTC).isoformat()
            writer.writerow([r["user_id"], when, r["skill_id"], r["item_id"], r["known_before"]])
    return path
