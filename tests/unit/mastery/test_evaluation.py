"""Evaluation: metrics by hand, agreement with pyBKT (precomputed), and `evaluate` end to end
on synthetic data with known parameters (pyBKT skipped there: its EM is slow)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from tests.unit.mastery.synthetic import generate, write, write_truth
from trellis.mastery.dataset import attempts_from_rows
from trellis.mastery.domain import EMPTY, Attempt, BktParameters, apply_attempt
from trellis.mastery.evaluation import auc, ece, evaluate, rmse
from trellis.mastery.fitting import SkillArrays, bkt_predictions

# pyBKT 1.4 `Model.predict` with prior 0.25, learn 0.12, guess 0.22, slip 0.08, no forgetting,
# on one learner answering 0,1,1,0,1,1,1,0,0,1 (computed once with the shim of evaluation.py).
PYBKT_OUTCOMES = [0, 1, 1, 0, 1, 1, 1, 0, 0, 1]
PYBKT_PREDICTIONS = [
    0.395,
    0.32436363636363635,
    0.5644878923766816,
    0.7980715317983363,
    0.505537882206683,
    0.7612782328902089,
    0.8796356065563651,
    0.9111161547890491,
    0.8513950545419758,
    0.6031166391047919,
]
PARAMS = BktParameters(prior=0.25, learn=0.12, guess=0.22, slip=0.08)


def test_the_offline_and_stream_models_match_pybkt_to_1e9() -> None:
    keys = ("user_id", "item_id", "timestamp", "correct", "skill_id")
    rows = [dict(zip(keys, ("u", "i", "0", str(c), "a"), strict=True)) for c in PYBKT_OUTCOMES]
    offline = bkt_predictions(attempts_from_rows(rows), SkillArrays.filled(1, PARAMS))
    assert offline.tolist() == pytest.approx(PYBKT_PREDICTIONS, abs=1e-9)

    state, stream = EMPTY, []
    t0 = datetime(2026, 9, 1, tzinfo=UTC)
    for n, c in enumerate(PYBKT_OUTCOMES):
        p = state.skill("a", PARAMS).p_mastered
        stream.append(p * (1 - PARAMS.slip) + (1 - p) * PARAMS.guess)
        state, _ = apply_attempt(state, Attempt(f"e{n}", ("a",), float(c)), lambda _: PARAMS, t0)
    assert stream == pytest.approx(PYBKT_PREDICTIONS, abs=1e-9)


def test_auc_by_hand_with_ties() -> None:
    y = np.array([0.0, 0.0, 1.0, 1.0, 1.0])
    p = np.array([0.1, 0.5, 0.5, 0.8, 0.9])
    # Pairs (positive, negative): 6; wins 5, one tie (0.5, 0.5) counts half: 5.5/6.
    assert auc(p, y) == pytest.approx(5.5 / 6, abs=1e-15)
    assert auc(np.array([0.2, 0.3]), np.array([1.0, 1.0])) != auc(np.array([0.2]), np.ones(1))


def test_rmse_and_ece_by_hand() -> None:
    p = np.array([0.05, 0.15, 0.95, 0.9])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    assert rmse(p, y) == pytest.approx(np.sqrt((0.0025 + 0.7225 + 0.0025 + 0.01) / 4), abs=1e-15)
    # Bins: [0, .1): 0.05 vs 0 -> 0.05; [.1, .2): 0.15 vs 1 -> 0.85; [.9, 1]: 1.85 vs 2 -> 0.15.
    assert ece(p, y) == pytest.approx((0.05 + 0.85 + 0.15) / 4, abs=1e-15)


def test_evaluate_on_data_with_known_parameters(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", generate(800, 12, seed=11, item_spread=1.0))
    test = write(
        tmp_path / "test.tsv", generate(400, 12, seed=12, item_spread=1.0, first_user=10_000), "\t"
    )
    result = evaluate(train, test, references=(), bootstrap=20)
    trellis = result.results["trellis"]
    assert trellis.n == 400 * 12 * 3
    assert 0.75 < trellis.auc < 0.9
    assert trellis.ece < 0.05
    low, high = result.intervals["trellis"]
    assert low < trellis.auc < high
    document = json.loads(json.dumps(result.as_dict()))
    assert set(document["trellis"]) == {"auc", "rmse", "ece", "n", "auc_ci95"}


def test_p_mastered_is_compared_with_the_true_state(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", generate(600, 12, seed=21))
    test_rows = generate(300, 12, seed=22, first_user=10_000)
    test = write(tmp_path / "test.csv", test_rows)
    truth = write_truth(tmp_path / "truth.csv", test_rows)
    result = evaluate(train, test, references=(), truth=truth)
    assert result.truth is not None
    assert result.truth.n == len(test_rows)
    assert result.truth.auc > 0.85  # BKT's state tracks the true state closely here
    assert result.truth.ece < 0.05
    assert "p_mastered_vs_truth" in result.as_dict()
