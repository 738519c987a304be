"""`python -m trellis.simulator generate` writes every file, the same bytes for the same seed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FILES = ("catalog.json", "roster.json", "activity.json", "truth.csv", "train.csv", "test.csv")


def _generate(out: Path, seed: int) -> str:
    options = ["--seed", str(seed), "--learners", "8", "--days", "6", "--policy", "random"]
    done = subprocess.run(
        [sys.executable, "-m", "trellis.simulator", "generate", "--out", str(out), *options],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout


def test_generate_command_is_deterministic(tmp_path: Path) -> None:
    summary = _generate(tmp_path / "a", seed=3)
    assert summary.startswith("catalog: 54, roster: 22, activity: ")
    _generate(tmp_path / "b", seed=3)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    header = (tmp_path / "a" / "train.csv").read_text().splitlines()[0]
    assert header == "user_id,item_id,timestamp,correct,skill_id"
