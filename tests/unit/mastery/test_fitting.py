"""Offline fitting and prediction: the file format, EM on data with known parameters, the
item-aware predictor, and agreement with the stream's model (`apply_attempt`)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from tests.unit.mastery.synthetic import SKILLS, difficulties, generate, write
from trellis.mastery.dataset import Attempts, DatasetError, attempts_from_rows, read_attempts
from trellis.mastery.domain import EMPTY, Attempt, BktParameters, apply_attempt, recall
from trellis.mastery.fitting import (
    MAX_FORGET,
    SkillArrays,
    bkt_predictions,
    fit_bkt,
    fit_model,
    predict_attempts,
)
from trellis.mastery.model_parameters import from_json, to_json
from trellis.mastery.prediction import Calibration, ModelSet

T0 = datetime(2026, 9, 1, tzinfo=UTC)
DAY = 86_400


def rows(*records: tuple[str, str, int, int, str]) -> list[dict[str, str]]:
    keys = ("user_id", "item_id", "timestamp", "correct", "skill_id")
    return [dict(zip(keys, map(str, r), strict=True)) for r in records]


def test_rows_are_ordered_by_learner_then_time_then_file_order(tmp_path: Path) -> None:
    path = tmp_path / "log.tsv"
    path.write_text(
        "user_id\titem_id\tskill_id\tcorrect\ttimestamp\textra\n"
        "u2\ti1\ta\t1\t5\tx\n"
        "u1\ti2\ta~~b\t0\t0\tx\n"
        "u1\ti1\ta\t1\t0\tx\n"
        "u2\ti2\tb\t0\t3\tx\n"
    )
    data = read_attempts(path)
    assert data.users == ["u2", "u1"]
    assert data.skills == ["a", "b"]
    # u1 (code 1) sorts after u2 (code 0); within u2, time 3 before time 5.
    assert data.user.tolist() == [0, 0, 1, 1, 1]
    assert data.item.tolist() == [1, 0, 1, 1, 0]
    assert data.skill.tolist() == [1, 0, 0, 1, 0]  # the multi-skill row gives a and b
    assert data.row.tolist() == [0, 1, 2, 2, 3]
    assert data.attempts == 4


def test_files_without_the_required_columns_or_with_bad_values_are_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("user_id,item_id,correct\nu,i,1\n")
    with pytest.raises(DatasetError, match="timestamp, skill_id"):
        read_attempts(path)
    with pytest.raises(DatasetError, match=":2: correct must be 0 or 1"):
        attempts_from_rows(rows(("u", "i", 0, 2, "a")))


def test_forward_filtering_agrees_with_the_streams_model() -> None:
    params = BktParameters(prior=0.25, learn=0.12, guess=0.22, slip=0.08, forget=0.1)
    outcomes = [0, 1, 1, 0, 1, 1, 1]
    # Seconds apart within a session, then gaps of 2, 3.5 and 3.5 days (forget is per day).
    times = [0, 60, 2 * DAY, 2 * DAY + 60, int(5.5 * DAY), 9 * DAY, 9 * DAY + 30]
    records = (("u", "i", t, c, "a") for t, c in zip(times, outcomes, strict=True))
    data = attempts_from_rows(rows(*records))
    arrays = SkillArrays.filled(1, params)
    predicted = bkt_predictions(data, arrays)

    state = EMPTY
    expected = []
    for n, (t, c) in enumerate(zip(times, outcomes, strict=True)):
        now = T0 + timedelta(seconds=t)
        p = recall(state.skill("a", params), params, now)
        expected.append(p * (1 - params.slip) + (1 - p) * params.guess)
        state, _ = apply_attempt(state, Attempt(f"e{n}", ("a",), float(c)), lambda _: params, now)
    assert predicted.tolist() == pytest.approx(expected, abs=1e-12)
    assert predicted[0] == pytest.approx(0.25 * 0.92 + 0.75 * 0.22, abs=1e-15)


def assert_recovered(data: Attempts, params: SkillArrays) -> None:
    for name, true in SKILLS.items():
        i = data.skills.index(name)
        assert params.prior[i] == pytest.approx(true.prior, abs=0.05)
        assert params.learn[i] == pytest.approx(true.learn, abs=0.04)
        assert params.guess[i] == pytest.approx(true.guess, abs=0.04)
        assert params.slip[i] == pytest.approx(true.slip, abs=0.04)


def test_em_recovers_known_parameters() -> None:
    # Attempts one second apart: no gap of days, so nothing to forget over.
    data = attempts_from_rows(generate(learners=1500, attempts_per_skill=15, seed=3))
    params, history = fit_bkt(data)
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(history))  # EM ascends
    assert_recovered(data, params)
    assert params.forget.max() < 1e-3


@pytest.mark.parametrize("seed", [3, 13])
def test_em_recovers_forgetting_per_day_over_gaps(seed: int) -> None:
    # 0 to 3 days between rounds; true forget per day: s0 0, s1 0.02, s2 0.1.
    data = attempts_from_rows(generate(1500, 15, seed=seed, gap_days=3))
    params, history = fit_bkt(data)
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(history))
    assert_recovered(data, params)
    for name, true in SKILLS.items():
        assert params.forget[data.skills.index(name)] == pytest.approx(true.forget, abs=0.02)
    assert params.forget[data.skills.index("s0")] < 0.005
    assert params.forget[data.skills.index("s1")] == pytest.approx(0.02, abs=0.005)


def test_forget_stays_within_its_bound() -> None:
    # Right three times on a day, wrong three times the next: the fit stops at MAX_FORGET.
    two_days = [1, 1, 1, 0, 0, 0]
    records = [
        (f"u{u}", "i", (n // 3) * DAY + n, c, "a")
        for u in range(200)
        for n, c in enumerate(two_days)
    ]
    params, _ = fit_bkt(attempts_from_rows(rows(*records)))
    assert params.forget[0] == pytest.approx(MAX_FORGET)


def test_calibration_is_the_identity_on_pure_bkt_data_and_finds_item_difficulties() -> None:
    pure = fit_model(attempts_from_rows(generate(1000, 15, seed=4)), "v").model
    assert pure.calibration.weight_bkt == pytest.approx(1.0, abs=0.1)
    assert pure.calibration.intercept == pytest.approx(0.0, abs=0.1)
    assert max(abs(d) for d in pure.item_difficulty.values()) < 0.25

    train = generate(1500, 15, seed=5, item_spread=1.0)
    model = fit_model(attempts_from_rows(train), "v").model
    true_d = difficulties(1.0)
    names = sorted(true_d)
    fitted = [model.item_difficulty[n] for n in names]
    assert np.corrcoef(fitted, [true_d[n] for n in names])[0, 1] > 0.9
    assert model.calibration.weight_difficulty == -1.0


def test_the_stream_predictor_agrees_with_the_offline_one() -> None:
    train = attempts_from_rows(generate(300, 10, seed=6, item_spread=1.0, gap_days=3))
    model = fit_model(train, "fit-x").model
    assert model.skills["s2"].forget > 0.05
    test_rows = generate(1, 6, seed=7, item_spread=1.0, first_user=900, gap_days=3)
    offline, _ = predict_attempts(model, attempts_from_rows(test_rows))

    state = EMPTY
    online = []
    for n, r in enumerate(test_rows):
        now = T0 + timedelta(seconds=int(r["timestamp"]))
        online.append(model.predict(state, r["item_id"], [r["skill_id"]], now))
        attempt = Attempt(f"e{n}", (r["skill_id"],), float(r["correct"]))
        state, _ = apply_attempt(state, attempt, model.params_for_skill, now)
    assert offline.tolist() == pytest.approx(online, abs=1e-9)


def test_prediction_by_hand() -> None:
    # Prior 0.3, guess 0.2, slip 0.1: p_bkt = 0.3*0.9 + 0.7*0.2 = 0.41, logit = -0.363965...
    # a = 2, b = -1, c = 0.5, difficulty 0.4: z = -0.727930 - 0.4 + 0.5 = -0.627930...
    # p = 1 / (1 + e^0.627930) = 1 / 2.873726... = 0.347979881...
    model = ModelSet(
        version="v",
        skills={"a": BktParameters(version="v")},
        item_difficulty={"i": 0.4},
        calibration=Calibration(2.0, -1.0, 0.5),
    )
    assert model.predict(EMPTY, "i", ["a"], T0) == pytest.approx(0.347979881, abs=1e-9)
    # An unknown item takes the catalog's difficulty, else 0.
    assert model.predict(EMPTY, "new", ["a"], T0, difficulty=0.4) == pytest.approx(
        0.347979881, abs=1e-9
    )


def test_parameter_sets_round_trip_through_json() -> None:
    data = attempts_from_rows(generate(50, 5, seed=8, item_spread=0.5, gap_days=3))
    model = fit_model(data, "fit-1").model
    assert all(p.forget > 0 for p in model.skills.values())  # fitted forget survives too
    again = from_json(to_json(model))
    assert again == model
    assert '"weightBkt"' in to_json(model)


def test_fit_command_writes_a_versioned_parameter_set(tmp_path: Path) -> None:
    from trellis.mastery.__main__ import main

    train = write(tmp_path / "train.csv", generate(100, 8, seed=9))
    main(["fit", "--train", str(train), "--out", str(tmp_path / "p.json")])
    model = from_json((tmp_path / "p.json").read_text())
    assert model.version.startswith("fit-") and len(model.version) == 16
    assert set(model.skills) == set(SKILLS)
    assert all(p.version == model.version for p in model.skills.values())
