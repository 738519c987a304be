"""`evaluate`: next-attempt prediction on a test file, with parameters fitted on a training file
(DESIGN.md §8), for Trellis's model and for pyBKT fitted on the same training data.

Each test attempt is predicted from that learner's earlier test attempts only. Metrics: AUC
(rank statistic, ties averaged), RMSE, and expected calibration error over ten equal-width bins
of the predicted probability (|mean prediction - mean outcome| weighted by the bin's share).

pyBKT is imported inside `pybkt_predictions` only, so the service runtime does not need it (it
is a dev dependency). Its EM assigns a 1x1 array into a float slot, which numpy 2 refuses;
`_patch_pybkt` wraps its E-step to return the log-likelihood as a float, at runtime, leaving the
installed package untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trellis.mastery.dataset import Attempts, read_attempts
from trellis.mastery.fitting import (
    FittedModel,
    Progress,
    bkt_mastery_before,
    fit_model,
    predict_attempts,
    skill_arrays,
)
from trellis.mastery.prediction import ModelSet

FloatArray = npt.NDArray[np.float64]
ECE_BINS = 10


@dataclass(frozen=True)
class Scores:
    auc: float
    rmse: float
    ece: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"auc": self.auc, "rmse": self.rmse, "ece": self.ece, "n": self.n}


def auc(p: FloatArray, y: FloatArray) -> float:
    positives = int(np.sum(y > 0.5))
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sorted_p = p[order]
    # Average ranks (1-based) over ties.
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    ends = np.r_[starts[1:], len(p)]
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    rank_sum = float(ranks[y > 0.5].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def rmse(p: FloatArray, y: FloatArray) -> float:
    return float(np.sqrt(np.mean((p - y) ** 2)))


def ece(p: FloatArray, y: FloatArray, bins: int = ECE_BINS) -> float:
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    gap = np.abs(
        np.bincount(index, weights=p, minlength=bins)
        - np.bincount(index, weights=y, minlength=bins)
    )
    return float(gap.sum() / max(1, len(p))) if count.sum() else float("nan")


def score(p: FloatArray, y: FloatArray) -> Scores:
    return Scores(auc(p, y), rmse(p, y), ece(p, y), len(y))


def bootstrap_auc(
    p: FloatArray, y: FloatArray, groups: npt.NDArray[np.int64], resamples: int, seed: int = 0
) -> tuple[float, float]:
    """95% interval of the AUC, resampling learners (`groups`) with replacement."""
    rng = np.random.default_rng(seed)
    n_groups = int(groups.max()) + 1
    members = np.argsort(groups, kind="stable")
    starts = np.searchsorted(groups[members], np.arange(n_groups))
    sizes = np.bincount(groups, minlength=n_groups)
    values = []
    for _ in range(resamples):
        chosen = rng.integers(n_groups, size=n_groups)
        idx = np.concatenate([members[starts[g] : starts[g] + sizes[g]] for g in chosen])
        values.append(auc(p[idx], y[idx]))
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def _patch_pybkt() -> None:
    import pyBKT.fit.EM_fit as em_fit

    if getattr(em_fit.run, "_trellis_shim", False):
        return
    original = em_fit.run

    def run(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        result["total_loglike"] = float(np.asarray(result["total_loglike"]).reshape(-1)[0])
        return result

    run._trellis_shim = True  # type: ignore[attr-defined]
    em_fit.run = run


def _frame(data: Attempts) -> Any:
    import pandas as pd

    first = np.r_[True, data.row[1:] != data.row[:-1]] if len(data) else np.array([], bool)
    return pd.DataFrame(
        {
            "user_id": np.asarray(data.users, dtype=object)[data.user[first]],
            "skill_name": np.asarray(data.skills, dtype=object)[data.skill[first]],
            "correct": data.correct[first].astype(np.int64),
            "order_id": np.arange(int(first.sum())),
        }
    )


def pybkt_predictions(train: Attempts, test: Attempts, seed: int = 0) -> FloatArray:
    """pyBKT (defaults: no forgetting, one fit per skill) fitted on `train`, predicting `test`
    attempts one step ahead. A multi-skill attempt is given pyBKT under its first skill."""
    _patch_pybkt()
    from pyBKT.models import Model

    model = Model(seed=seed, num_fits=1, parallel=False)
    model.fit(data=_frame(train))
    frame = _frame(test)
    known = frame["skill_name"].isin(list(model.coef_))
    predictions = np.full(len(frame), float(train.correct.mean()))
    if known.any():
        predicted = model.predict(data=frame[known].reset_index(drop=True))
        predictions[known.to_numpy()] = predicted["correct_predictions"].to_numpy()
    return np.clip(predictions.astype(np.float64), 0.0, 1.0)


def mastery_vs_truth(model: ModelSet, test: Attempts, truth_path: Path) -> Scores:
    """Estimated P(mastered) before each test attempt against the simulator's true state
    (`truth.csv`: learner_id, occurred_at, skill_id, item_id, known_before), joined on learner,
    skill, item and the timestamp in whole seconds. AUC, RMSE (a Brier score's root) and ECE
    of P(mastered) as a forecast of the true 0/1 state; `n` is the number joined."""
    import csv

    truth: dict[tuple[str, str, str, int], list[float]] = {}
    with truth_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            when = int(datetime.fromisoformat(row["occurred_at"]).timestamp())
            key = (row["learner_id"], row["skill_id"], row["item_id"], when)
            truth.setdefault(key, []).append(float(row["known_before"]))
    p_before = bkt_mastery_before(test, skill_arrays(model, test))
    estimated, actual = [], []
    for i in range(len(test)):
        key = (
            test.users[test.user[i]],
            test.skills[test.skill[i]],
            test.items[test.item[i]],
            int(test.timestamp[i]),
        )
        queue = truth.get(key)
        if queue:
            estimated.append(p_before[i])
            actual.append(queue.pop(0))
    return score(np.asarray(estimated), np.asarray(actual))


@dataclass(frozen=True)
class Evaluation:
    fitted: FittedModel
    results: dict[str, Scores]
    intervals: dict[str, tuple[float, float]]
    truth: Scores | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, scores in self.results.items():
            entry: dict[str, Any] = scores.as_dict()
            if name in self.intervals:
                entry["auc_ci95"] = list(self.intervals[name])
            out[name] = entry
        if self.truth is not None:
            out["p_mastered_vs_truth"] = self.truth.as_dict()
        return out


def evaluate(
    train_path: Path,
    test_path: Path,
    references: Sequence[str] = ("pybkt",),
    bootstrap: int = 0,
    truth: Path | None = None,
    progress: Progress | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> Evaluation:
    def stage(name: str) -> None:
        if on_stage is not None:
            on_stage(name)

    stage("reading files")
    train, test = read_attempts(train_path), read_attempts(test_path)
    stage("fitting Trellis's model")
    fitted = fit_model(train, version="evaluation", progress=progress or _quiet)
    p, y = predict_attempts(fitted.model, test)
    first = np.r_[True, test.row[1:] != test.row[:-1]] if len(test) else np.array([], bool)
    learners = test.user[first]
    results = {"trellis": score(p, y)}
    predictions = {"trellis": p}
    if "pybkt" in references:
        stage("fitting pyBKT (slow)")
        predictions["pybkt"] = pybkt_predictions(train, test)
        results["pybkt"] = score(predictions["pybkt"], y)
    intervals = {}
    if bootstrap > 0:
        stage("bootstrap")
        for name, pred in predictions.items():
            intervals[name] = bootstrap_auc(pred, y, learners, bootstrap)
    truth_scores = None
    if truth is not None:
        stage("comparing P(mastered) with the ground truth")
        truth_scores = mastery_vs_truth(fitted.model, test, truth)
    return Evaluation(fitted, results, intervals, truth_scores)


def _quiet(_stage: str, _done: int, _total: int) -> None:
    return None
