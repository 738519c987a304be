"""Offline fitting: per-skill BKT parameters by EM, then item difficulties and the calibration
of the correctness predictor (`trellis.mastery.prediction`). numpy only; no I/O.

EM (Baum-Welch for BKT's two-state hidden Markov model, no forgetting between attempts) runs on
every (learner, skill) sequence at once: sequences are grouped in buckets of similar length,
padded, and stepped through time together; per-skill sufficient statistics are summed with
`np.bincount`. Guess and slip are kept in [`MIN_GUESS_SLIP`, `MAX_GUESS_SLIP`] so that
"mastered" keeps meaning "more likely to answer correctly" (the usual BKT identifiability
constraint).

The predictor is then fitted on the training attempts themselves: each attempt's BKT
prediction comes from that learner's earlier attempts only (forward filtering), and a logistic
regression `logit(p) = a * logit(p_bkt) - difficulty[item] + c` is fitted by Newton steps, with
a Gaussian prior (L2, `DIFFICULTY_L2`) pulling item difficulties to 0, the value an unseen item
gets. In the catalog's terms: weight_bkt = a, weight_difficulty = -1, intercept = c.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trellis.mastery.dataset import Attempts
from trellis.mastery.domain import BktParameters
from trellis.mastery.prediction import MIN_P, Calibration, ModelSet

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Progress = Callable[[str, int, int], None]

MIN_GUESS_SLIP = 1e-3
MAX_GUESS_SLIP = 0.45
MIN_PROB = 1e-6
DIFFICULTY_L2 = 1.0
INITIAL = BktParameters(prior=0.4, learn=0.1, guess=0.2, slip=0.1)


def _no_progress(_stage: str, _done: int, _total: int) -> None:
    return None


@dataclass(frozen=True)
class SkillArrays:
    """BKT parameters of every skill, indexed by skill code."""

    prior: FloatArray
    learn: FloatArray
    guess: FloatArray
    slip: FloatArray

    @classmethod
    def filled(cls, n: int, params: BktParameters) -> SkillArrays:
        return cls(
            np.full(n, params.prior),
            np.full(n, params.learn),
            np.full(n, params.guess),
            np.full(n, params.slip),
        )

    def parameters(self, skill: int, version: str) -> BktParameters:
        return BktParameters(
            prior=float(self.prior[skill]),
            learn=float(self.learn[skill]),
            guess=float(self.guess[skill]),
            slip=float(self.slip[skill]),
            version=version,
        )


@dataclass(frozen=True)
class _Bucket:
    obs: FloatArray  # (T, n) 0/1, 0 where padded
    mask: npt.NDArray[np.bool_]  # (T, n)
    rows: IntArray  # (T, n) index into the attempts arrays, -1 where padded
    skill: IntArray  # (n,)


def _buckets(data: Attempts) -> list[_Bucket]:
    """(learner, skill) sequences in time order, grouped by length (powers of two) and padded."""
    n = len(data)
    if n == 0:
        return []
    key = data.user * max(1, len(data.skills)) + data.skill
    order = np.argsort(key, kind="stable")  # rows are in time order per learner already
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    lengths = np.diff(np.r_[starts, n])
    position = np.arange(n) - np.repeat(starts, lengths)
    seq_of_row = np.repeat(np.arange(len(starts)), lengths)
    size_class = np.ceil(np.log2(lengths)).astype(np.int64)
    buckets = []
    for cls in np.unique(size_class):
        seqs = np.flatnonzero(size_class == cls)
        local = np.full(len(starts), -1, dtype=np.int64)
        local[seqs] = np.arange(len(seqs))
        t_max = int(lengths[seqs].max())
        rows = np.full((t_max, len(seqs)), -1, dtype=np.int64)
        in_bucket = local[seq_of_row] >= 0
        rows[position[in_bucket], local[seq_of_row[in_bucket]]] = order[in_bucket]
        mask = rows >= 0
        obs = np.where(mask, data.correct[np.maximum(rows, 0)], 0.0)
        buckets.append(_Bucket(obs, mask, rows, data.skill[order[starts[seqs]]]))
    return buckets


def _emissions(b: _Bucket, guess: FloatArray, slip: FloatArray) -> tuple[FloatArray, FloatArray]:
    """P(observation | unknown), P(observation | known); 1 where padded."""
    g, s = guess[b.skill], slip[b.skill]
    e0 = np.where(b.obs > 0.5, g, 1.0 - g)
    e1 = np.where(b.obs > 0.5, 1.0 - s, s)
    return np.where(b.mask, e0, 1.0), np.where(b.mask, e1, 1.0)


def _forward(b: _Bucket, p: SkillArrays) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Filtered P(known) after each observation, P(known) before it, and the scaling factors."""
    e0, e1 = _emissions(b, p.guess, p.slip)
    learn = p.learn[b.skill]
    t_max, n = b.obs.shape
    known_after = np.empty((t_max, n))
    known_before = np.empty((t_max, n))
    scale = np.empty((t_max, n))
    k = p.prior[b.skill].copy()
    for t in range(t_max):
        known_before[t] = k
        a0 = (1.0 - k) * e0[t]
        a1 = k * e1[t]
        c = a0 + a1
        scale[t] = c
        k_post = a1 / c
        known_after[t] = k_post
        k = k_post + (1.0 - k_post) * learn
    return known_after, known_before, scale


def bkt_predictions(data: Attempts, params: SkillArrays) -> FloatArray:
    """P(correct) of every row from BKT, given that learner's earlier rows on the skill only."""
    before = bkt_mastery_before(data, params)
    skill = data.skill
    return before * (1.0 - params.slip[skill]) + (1.0 - before) * params.guess[skill]


def bkt_mastery_before(data: Attempts, params: SkillArrays) -> FloatArray:
    """P(mastered) of every row's skill just before it, from that learner's earlier rows."""
    out = np.empty(len(data))
    for b in _buckets(data):
        _, before, _ = _forward(b, params)
        out[b.rows[b.mask]] = before[b.mask]
    return out


def fit_bkt(
    data: Attempts,
    max_iterations: int = 100,
    tolerance: float = 1e-4,
    progress: Progress = _no_progress,
) -> tuple[SkillArrays, list[float]]:
    """EM from `INITIAL`; stops when the log-likelihood gains less than `tolerance` per row.
    Returns the parameters and the log-likelihood of each iteration."""
    n_skills = len(data.skills)
    params = SkillArrays.filled(n_skills, INITIAL)
    buckets = _buckets(data)
    history: list[float] = []
    for iteration in range(max_iterations):
        stats = np.zeros((8, n_skills))
        loglik = 0.0
        for b in buckets:
            loglik += _accumulate(b, params, stats, n_skills)
        history.append(loglik)
        params = _maximize(params, stats)
        progress("EM", iteration + 1, max_iterations)
        if len(history) > 1 and (history[-1] - history[-2]) < tolerance * max(1, len(data)):
            break
    progress("EM", max_iterations, max_iterations)
    return params, history


def _accumulate(b: _Bucket, p: SkillArrays, stats: FloatArray, n_skills: int) -> float:
    e0, e1 = _emissions(b, p.guess, p.slip)
    learn = p.learn[b.skill]
    after, _, scale = _forward(b, p)
    t_max, n = b.obs.shape
    # Backward pass (scaled like the forward one): beta0, beta1 per step.
    beta0 = np.ones((t_max, n))
    beta1 = np.ones((t_max, n))
    for t in range(t_max - 2, -1, -1):
        w1 = e1[t + 1] * beta1[t + 1] / scale[t + 1]
        w0 = e0[t + 1] * beta0[t + 1] / scale[t + 1]
        beta0[t] = (1.0 - learn) * w0 + learn * w1
        beta1[t] = w1
    gamma1 = after * beta1
    gamma0 = (1.0 - after) * beta0
    total = gamma0 + gamma1
    gamma0, gamma1 = gamma0 / total, gamma1 / total
    has_next = np.zeros_like(b.mask)
    has_next[:-1] = b.mask[1:]
    xi01 = np.zeros((t_max, n))
    xi01[:-1] = (1.0 - after[:-1]) * learn * e1[1:] * beta1[1:] / scale[1:]
    m = b.mask

    def add(index: int, values: FloatArray, where: npt.NDArray[np.bool_] = m) -> None:
        sk = np.broadcast_to(b.skill, b.obs.shape)[where]
        stats[index] += np.bincount(sk, weights=values[where], minlength=n_skills)

    stats[0] += np.bincount(b.skill, weights=gamma1[0], minlength=n_skills)
    stats[1] += np.bincount(b.skill, minlength=n_skills)
    add(2, xi01, has_next)
    add(3, gamma0, has_next)
    add(4, gamma0 * b.obs)
    add(5, gamma0)
    add(6, gamma1 * (1.0 - b.obs))
    add(7, gamma1)
    return float(np.log(scale[m]).sum())


def _maximize(p: SkillArrays, s: FloatArray) -> SkillArrays:
    def ratio(num: FloatArray, den: FloatArray, old: FloatArray) -> FloatArray:
        return np.where(den > 1e-9, num / np.maximum(den, 1e-12), old)

    return SkillArrays(
        prior=np.clip(ratio(s[0], s[1], p.prior), MIN_PROB, 1.0 - MIN_PROB),
        learn=np.clip(ratio(s[2], s[3], p.learn), MIN_PROB, 1.0 - MIN_PROB),
        guess=np.clip(ratio(s[4], s[5], p.guess), MIN_GUESS_SLIP, MAX_GUESS_SLIP),
        slip=np.clip(ratio(s[6], s[7], p.slip), MIN_GUESS_SLIP, MAX_GUESS_SLIP),
    )


def fit_calibration(
    x: FloatArray,
    item: IntArray,
    y: FloatArray,
    n_items: int,
    iterations: int = 30,
    l2: float = DIFFICULTY_L2,
    progress: Progress = _no_progress,
) -> tuple[Calibration, FloatArray]:
    """Fit `logit(p) = a x - d[item] + c` (x = logit of BKT's prediction) by Newton steps,
    alternating the items' (independent, diagonal) steps with a joint step on (a, c)."""
    a, c = 1.0, 0.0
    d = np.zeros(n_items)
    for iteration in range(iterations):
        p = _sigmoid(a * x - d[item] + c)
        r, w = y - p, np.maximum(p * (1.0 - p), 1e-9)
        d += (-np.bincount(item, weights=r, minlength=n_items) - l2 * d) / (
            np.bincount(item, weights=w, minlength=n_items) + l2
        )
        p = _sigmoid(a * x - d[item] + c)
        r, w = y - p, np.maximum(p * (1.0 - p), 1e-9)
        grad = np.array([np.sum(r * x), np.sum(r)])
        hess = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        a, c = a + float(step[0]), c + float(step[1])
        progress("calibration", iteration + 1, iterations)
    return Calibration(weight_bkt=a, weight_difficulty=-1.0, intercept=c), d


def attempt_features(
    data: Attempts, row_predictions: FloatArray
) -> tuple[FloatArray, IntArray, FloatArray]:
    """Per attempt: the mean logit of BKT's predictions over its skills, its item, its outcome."""
    n = data.attempts
    counts = np.bincount(data.row, minlength=n)
    x = np.bincount(data.row, weights=logit(row_predictions), minlength=n) / np.maximum(counts, 1)
    first = np.r_[True, data.row[1:] != data.row[:-1]]
    return x, data.item[first], data.correct[first]


def logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, MIN_P, 1.0 - MIN_P)
    return np.log(q / (1.0 - q))


def _sigmoid(z: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class FittedModel:
    model: ModelSet
    log_likelihoods: list[float]


def fit_model(data: Attempts, version: str, progress: Progress = _no_progress) -> FittedModel:
    """BKT per skill by EM, then item difficulties and calibration, as one versioned set."""
    params, history = fit_bkt(data, progress=progress)
    x, item, y = attempt_features(data, bkt_predictions(data, params))
    calibration, difficulty = fit_calibration(x, item, y, len(data.items), progress=progress)
    model = ModelSet(
        version=version,
        skills={name: params.parameters(i, version) for i, name in enumerate(data.skills)},
        item_difficulty={name: float(difficulty[i]) for i, name in enumerate(data.items)},
        calibration=calibration,
    )
    return FittedModel(model, history)


def skill_arrays(model: ModelSet, data: Attempts) -> SkillArrays:
    """The set's parameters for the skills of `data` (defaults for skills it does not cover)."""
    arrays = SkillArrays.filled(len(data.skills), INITIAL)
    for i, name in enumerate(data.skills):
        p = model.params_for_skill(name)
        arrays.prior[i], arrays.learn[i] = p.prior, p.learn
        arrays.guess[i], arrays.slip[i] = p.guess, p.slip
    return arrays


def predict_attempts(model: ModelSet, data: Attempts) -> tuple[FloatArray, FloatArray]:
    """P(correct) of every attempt of `data` from that learner's earlier attempts in `data` only
    (forward filtering with the set's parameters), and the outcomes. Vectorized equivalent of
    folding `apply_attempt` and calling `ModelSet.predict` before each attempt (forget = 0)."""
    x, item, y = attempt_features(data, bkt_predictions(data, skill_arrays(model, data)))
    difficulty = np.array([model.item_difficulty.get(name, 0.0) for name in data.items])
    cal = model.calibration
    z = cal.weight_bkt * x + cal.weight_difficulty * difficulty[item] + cal.intercept
    return _sigmoid(z), y
