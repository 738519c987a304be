"""Offline fitting: per-skill BKT parameters by EM, then item difficulties and the calibration
of the correctness predictor (`trellis.mastery.prediction`). numpy only; no I/O.

EM (Baum-Welch for BKT's two-state hidden Markov model) runs on every (learner, skill) sequence
at once: sequences are grouped in buckets of similar length, padded, and stepped through time
together; per-skill sufficient statistics are summed with `np.bincount`. Guess and slip are kept
in [`MIN_GUESS_SLIP`, `MAX_GUESS_SLIP`] so that "mastered" keeps meaning "more likely to answer
correctly" (the usual BKT identifiability constraint).

The transition between two attempts is the live model's (`trellis.mastery.domain`): learning
after the attempt, then forgetting per day of the gap, so a known skill stays known with
retention `r = (1 - forget) ** days` and an unknown one becomes known with `learn * r`
(timestamps in seconds). As pyBKT with `forgets=True`, but per day rather than per attempt:
attempts within a session (r ~ 1) say little about `forget`, gaps of days do. The M-step for
`forget` has no closed form when gaps differ; its objective is concave in -log(1 - forget), so
it is solved per skill by bisection, within [0, `MAX_FORGET`]. EM starts from a small positive
`forget` (0 is a fixed point of EM). A weak prior, `FORGET_PRIOR_DAYS` days over which a known
skill was kept, holds `forget` near 0 when the data have no gaps of days (attempts seconds
apart leave the likelihood flat in `forget`, and plain EM would drift to an arbitrary value);
EM then maximizes the log-likelihood plus this prior's log-density, which is what it reports.

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
from trellis.mastery.domain import SECONDS_PER_DAY, BktParameters
from trellis.mastery.prediction import MIN_P, Calibration, ModelSet

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Progress = Callable[[str, int, int], None]

MIN_GUESS_SLIP = 1e-3
MAX_GUESS_SLIP = 0.45
MIN_PROB = 1e-6
MAX_FORGET = 0.5  # per day: beyond it a skill would be half lost overnight
FORGET_BISECTIONS = 40
FORGET_PRIOR_DAYS = 7.0
DIFFICULTY_L2 = 1.0
INITIAL = BktParameters(prior=0.4, learn=0.1, guess=0.2, slip=0.1, forget=0.02)


def _no_progress(_stage: str, _done: int, _total: int) -> None:
    return None


@dataclass(frozen=True)
class SkillArrays:
    """BKT parameters of every skill, indexed by skill code."""

    prior: FloatArray
    learn: FloatArray
    guess: FloatArray
    slip: FloatArray
    forget: FloatArray

    @classmethod
    def filled(cls, n: int, params: BktParameters) -> SkillArrays:
        return cls(
            np.full(n, params.prior),
            np.full(n, params.learn),
            np.full(n, params.guess),
            np.full(n, params.slip),
            np.full(n, params.forget),
        )

    def parameters(self, skill: int, version: str) -> BktParameters:
        return BktParameters(
            prior=float(self.prior[skill]),
            learn=float(self.learn[skill]),
            guess=float(self.guess[skill]),
            slip=float(self.slip[skill]),
            forget=float(self.forget[skill]),
            version=version,
        )


@dataclass(frozen=True)
class _Bucket:
    obs: FloatArray  # (T, n) 0/1, 0 where padded
    mask: npt.NDArray[np.bool_]  # (T, n)
    rows: IntArray  # (T, n) index into the attempts arrays, -1 where padded
    days: FloatArray  # (T, n) days since the previous attempt of the sequence, 0 first and padded
    skill: IntArray  # (n,)

    def retention(self, p: SkillArrays) -> FloatArray:
        """P(a known skill is still known) over each step's gap: (1 - forget) ** days."""
        return np.exp(self.days * np.log1p(-p.forget[self.skill]))


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
    gap = np.diff(data.timestamp[order], prepend=0.0) / SECONDS_PER_DAY
    gap[starts] = 0.0
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
        days = np.zeros((t_max, len(seqs)))
        days[position[in_bucket], local[seq_of_row[in_bucket]]] = np.maximum(gap[in_bucket], 0.0)
        buckets.append(_Bucket(obs, mask, rows, days, data.skill[order[starts[seqs]]]))
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
    retention = b.retention(p)
    t_max, n = b.obs.shape
    known_after = np.empty((t_max, n))
    known_before = np.empty((t_max, n))
    scale = np.empty((t_max, n))
    learned = p.prior[b.skill].copy()
    for t in range(t_max):
        k = learned * retention[t]  # retention is 1 at the first attempt
        known_before[t] = k
        a0 = (1.0 - k) * e0[t]
        a1 = k * e1[t]
        c = a0 + a1
        scale[t] = c
        k_post = a1 / c
        known_after[t] = k_post
        learned = k_post + (1.0 - k_post) * learn
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
    max_iterations: int = 200,
    tolerance: float = 1e-7,
    progress: Progress = _no_progress,
) -> tuple[SkillArrays, list[float]]:
    """EM from `INITIAL`; stops when the log-likelihood gains less than `tolerance` per row.
    Returns the parameters and the log-likelihood of each iteration. The tolerance is tight
    because `forget` is weakly identified: EM keeps moving it while the log-likelihood hardly
    changes (1e-4 per row stopped the simulator's fit after 4 iterations, far from its
    optimum)."""
    n_skills = len(data.skills)
    params = SkillArrays.filled(n_skills, INITIAL)
    buckets = _buckets(data)
    history: list[float] = []
    for iteration in range(max_iterations):
        stats = np.zeros((_STATS, n_skills))
        lapses: list[_Lapses] = []
        loglik = 0.0
        for b in buckets:
            gain, bucket_lapses = _accumulate(b, params, stats, n_skills)
            loglik += gain
            lapses.append(bucket_lapses)
        history.append(loglik + FORGET_PRIOR_DAYS * float(np.log1p(-params.forget).sum()))
        params = _maximize(params, stats, _Lapses.join(lapses))
        progress("EM", iteration + 1, max_iterations)
        if len(history) > 1 and (history[-1] - history[-2]) < tolerance * max(1, len(data)):
            break
    progress("EM", max_iterations, max_iterations)
    return params, history


# Rows of the per-skill sufficient statistics summed by `_accumulate`.
(
    _FIRST_KNOWN,  # P(known) at the first attempt
    _SEQUENCES,
    _LEARNED,  # unknown at an attempt, learned before the next one
    _UNKNOWN_WITH_NEXT,
    _GUESSED,  # unknown and correct
    _UNKNOWN,
    _SLIPPED,  # known and wrong
    _KNOWN,
    _KEPT_DAYS,  # days of gaps over which a known skill stayed known
    _STATS,
) = range(10)


@dataclass(frozen=True)
class _Lapses:
    """Gaps of more than 0 days with their expected number of forgettings (a known skill, or
    one just learned, that is unknown at the next attempt)."""

    skill: IntArray
    days: FloatArray
    weight: FloatArray

    @classmethod
    def join(cls, parts: list[_Lapses]) -> _Lapses:
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
        return cls(
            np.concatenate([x.skill for x in parts]),
            np.concatenate([x.days for x in parts]),
            np.concatenate([x.weight for x in parts]),
        )


def _accumulate(
    b: _Bucket, p: SkillArrays, stats: FloatArray, n_skills: int
) -> tuple[float, _Lapses]:
    e0, e1 = _emissions(b, p.guess, p.slip)
    learn = p.learn[b.skill]
    retention = b.retention(p)
    after, _, scale = _forward(b, p)
    t_max, n = b.obs.shape
    # Backward pass (scaled like the forward one): beta0, beta1 per step. Between steps t and
    # t + 1: unknown -> known with learn * r, known -> known with r (r: retention before t + 1).
    beta0 = np.ones((t_max, n))
    beta1 = np.ones((t_max, n))
    for t in range(t_max - 2, -1, -1):
        w1 = e1[t + 1] * beta1[t + 1] / scale[t + 1]
        w0 = e0[t + 1] * beta0[t + 1] / scale[t + 1]
        r = retention[t + 1]
        beta0[t] = (1.0 - learn * r) * w0 + learn * r * w1
        beta1[t] = (1.0 - r) * w0 + r * w1
    gamma1 = after * beta1
    gamma0 = (1.0 - after) * beta0
    total = gamma0 + gamma1
    gamma0, gamma1 = gamma0 / total, gamma1 / total
    has_next = np.zeros_like(b.mask)
    has_next[:-1] = b.mask[1:]

    # Expected transitions t -> t + 1 (xi_ij: state i at t, j at t + 1); zero at the last step.
    def pair(w_next: FloatArray) -> FloatArray:
        out = np.zeros((t_max, n))
        out[:-1] = w_next[1:] / scale[1:]
        return out

    w0, w1 = pair(e0 * beta0), pair(e1 * beta1)
    r = np.ones((t_max, n))
    r[:-1] = retention[1:]
    next_days = np.zeros((t_max, n))
    next_days[:-1] = b.days[1:]
    xi00 = (1.0 - after) * (1.0 - learn * r) * w0
    xi01 = (1.0 - after) * learn * r * w1
    xi10 = after * (1.0 - r) * w0
    xi11 = after * r * w1
    # unknown -> unknown is "not learned" or "learned, then forgotten in the gap".
    learned_forgotten = xi00 * learn * (1.0 - r) / (1.0 - learn * r)
    m = b.mask

    def add(index: int, values: FloatArray, where: npt.NDArray[np.bool_] = m) -> None:
        sk = np.broadcast_to(b.skill, b.obs.shape)[where]
        stats[index] += np.bincount(sk, weights=values[where], minlength=n_skills)

    stats[_FIRST_KNOWN] += np.bincount(b.skill, weights=gamma1[0], minlength=n_skills)
    stats[_SEQUENCES] += np.bincount(b.skill, minlength=n_skills)
    add(_LEARNED, xi01 + learned_forgotten, has_next)
    add(_UNKNOWN_WITH_NEXT, gamma0, has_next)
    add(_GUESSED, gamma0 * b.obs)
    add(_UNKNOWN, gamma0)
    add(_SLIPPED, gamma1 * (1.0 - b.obs))
    add(_KNOWN, gamma1)
    add(_KEPT_DAYS, (xi01 + xi11) * next_days, has_next)
    gaps = has_next & (next_days > 0.0)
    lapses = _Lapses(
        np.broadcast_to(b.skill, b.obs.shape)[gaps],
        next_days[gaps],
        (xi10 + learned_forgotten)[gaps],
    )
    return float(np.log(scale[m]).sum()), lapses


def _maximize(p: SkillArrays, s: FloatArray, lapses: _Lapses) -> SkillArrays:
    def ratio(num: FloatArray, den: FloatArray, old: FloatArray) -> FloatArray:
        return np.where(den > 1e-9, num / np.maximum(den, 1e-12), old)

    return SkillArrays(
        prior=np.clip(ratio(s[_FIRST_KNOWN], s[_SEQUENCES], p.prior), MIN_PROB, 1.0 - MIN_PROB),
        learn=np.clip(ratio(s[_LEARNED], s[_UNKNOWN_WITH_NEXT], p.learn), MIN_PROB, 1.0 - MIN_PROB),
        guess=np.clip(ratio(s[_GUESSED], s[_UNKNOWN], p.guess), MIN_GUESS_SLIP, MAX_GUESS_SLIP),
        slip=np.clip(ratio(s[_SLIPPED], s[_KNOWN], p.slip), MIN_GUESS_SLIP, MAX_GUESS_SLIP),
        forget=_maximize_forget(s[_KEPT_DAYS], lapses),
    )


def _maximize_forget(kept_days: FloatArray, lapses: _Lapses) -> FloatArray:
    """Per skill, the forget that maximizes (kept days + prior days) log(1 - f) + sum(lapses)
    weight log(1 - (1 - f) ** days): with theta = -log(1 - f), a concave function of theta
    whose derivative, decreasing, is bisected for its zero in [0, -log(1 - MAX_FORGET)]."""
    kept_days = kept_days + FORGET_PRIOR_DAYS
    low = np.zeros_like(kept_days)
    high = np.full_like(kept_days, -np.log1p(-MAX_FORGET))
    weighted_days = lapses.weight * lapses.days
    for _ in range(FORGET_BISECTIONS):
        theta = (low + high) / 2.0
        lapse_slope = weighted_days / np.expm1(theta[lapses.skill] * lapses.days)
        slope = np.bincount(lapses.skill, weights=lapse_slope, minlength=len(kept_days))
        rising = slope > kept_days
        low, high = np.where(rising, theta, low), np.where(rising, high, theta)
    return -np.expm1(-(low + high) / 2.0)


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
        arrays.forget[i] = p.forget
    return arrays


def predict_attempts(model: ModelSet, data: Attempts) -> tuple[FloatArray, FloatArray]:
    """P(correct) of every attempt of `data` from that learner's earlier attempts in `data` only
    (forward filtering with the set's parameters, decayed over the days between attempts), and
    the outcomes. Vectorized equivalent of folding `apply_attempt` and calling
    `ModelSet.predict` before each attempt, at the attempts' times."""
    x, item, y = attempt_features(data, bkt_predictions(data, skill_arrays(model, data)))
    difficulty = np.array([model.item_difficulty.get(name, 0.0) for name in data.items])
    cal = model.calibration
    z = cal.weight_bkt * x + cal.weight_difficulty * difficulty[item] + cal.intercept
    return _sigmoid(z), y
