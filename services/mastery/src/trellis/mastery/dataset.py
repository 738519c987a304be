"""Attempt logs in the common knowledge-tracing file format (DESIGN.md §8), as numpy arrays.

A file is tab- or comma-separated (sniffed from the header line) with a header naming at least
`user_id`, `item_id`, `timestamp`, `correct` (0/1) and `skill_id`; other columns are ignored.
Rows are put in time order per learner: by `timestamp`, and by file order among equal timestamps
(so files whose timestamps are all 0 keep their order). A `skill_id` of several skills joined by
`~~` (the ASSISTments convention) names a multi-skill item; the model uses each skill.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

REQUIRED = ("user_id", "item_id", "timestamp", "correct", "skill_id")
SKILL_SEPARATOR = "~~"

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class DatasetError(ValueError):
    """A file that is not in the expected format (names the file and the line)."""


@dataclass(frozen=True)
class Attempts:
    """One row per (attempt, skill), sorted by learner, then time, then file order.

    `row` is the attempt's index in time order (several skills of one attempt share it);
    `users`, `items`, `skills` are the names behind the integer codes.
    """

    user: IntArray
    item: IntArray
    skill: IntArray
    correct: FloatArray
    timestamp: FloatArray
    row: IntArray
    users: list[str]
    items: list[str]
    skills: list[str]

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def attempts(self) -> int:
        return 0 if len(self) == 0 else int(self.row.max()) + 1


def read_attempts(path: Path) -> Attempts:
    with path.open(newline="", encoding="utf-8") as handle:
        header = handle.readline()
        delimiter = "\t" if header.count("\t") > header.count(",") else ","
        handle.seek(0)
        reader = csv.DictReader(handle, delimiter=delimiter)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: header lacks {', '.join(missing)}")
        return attempts_from_rows(reader, str(path))


def attempts_from_rows(rows: Iterable[dict[str, str]], source: str = "rows") -> Attempts:
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    skills: dict[str, int] = {}
    user, item, skill, correct, timestamp, order = [], [], [], [], [], []
    for line, record in enumerate(rows, start=2):
        try:
            value = float(record["correct"])
            when = float(record["timestamp"] or 0.0)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{source}:{line}: {exc}") from exc
        if value not in (0.0, 1.0):
            raise DatasetError(f"{source}:{line}: correct must be 0 or 1, got {value!r}")
        names = [s for s in (record["skill_id"] or "").split(SKILL_SEPARATOR) if s]
        u = users.setdefault(record["user_id"], len(users))
        i = items.setdefault(record["item_id"], len(items))
        for name in names:
            user.append(u)
            item.append(i)
            skill.append(skills.setdefault(name, len(skills)))
            correct.append(value)
            timestamp.append(when)
            order.append(line)
    user_a = np.asarray(user, dtype=np.int64)
    time_a = np.asarray(timestamp, dtype=np.float64)
    order_a = np.asarray(order, dtype=np.int64)
    sort = np.lexsort((order_a, time_a, user_a))
    # Rows of one attempt (same file line) stay together; number attempts in the new order.
    sorted_order = order_a[sort]
    new_attempt = np.ones(len(sort), dtype=bool)
    new_attempt[1:] = sorted_order[1:] != sorted_order[:-1]
    row = np.cumsum(new_attempt) - 1
    return Attempts(
        user=user_a[sort],
        item=np.asarray(item, dtype=np.int64)[sort],
        skill=np.asarray(skill, dtype=np.int64)[sort],
        correct=np.asarray(correct, dtype=np.float64)[sort],
        timestamp=time_a[sort],
        row=row.astype(np.int64),
        users=list(users),
        items=list(items),
        skills=list(skills),
    )
