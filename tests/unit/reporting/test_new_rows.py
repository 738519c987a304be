"""The sink's filter of rows already stored or already taken, and the token ranges it reports."""

from __future__ import annotations

from trellis.reporting.projection import _new_rows
from trellis.reporting.rows import ErasedLearnerRow, Row


def row(partition: int, offset: int, topic: str = "t") -> Row:
    return ErasedLearnerRow("district-a", "l1", f"e{offset}", 0, topic, partition, offset)


def offsets(rows: list[Row]) -> list[tuple[int, int]]:
    return [(r.source_partition, r.source_offset) for r in rows]


def test_rows_in_order_above_the_stored_position_are_all_taken() -> None:
    fresh, ranges = _new_rows([row(0, 5), row(1, 2), row(0, 6), row(1, 3)], {("t", 0): 4})

    assert offsets(fresh) == [(0, 5), (1, 2), (0, 6), (1, 3)]
    assert ranges == {("t", 0): (5, 6), ("t", 1): (2, 3)}


def test_stored_rows_and_repeats_are_dropped_even_out_of_order() -> None:
    # Records read again after a rebalance: offsets go back within a partition.
    rows = [row(0, 3), row(0, 7), row(0, 8), row(0, 7), row(0, 5), row(0, 5), row(0, 9), row(1, 1)]

    fresh, ranges = _new_rows(rows, {("t", 0): 4, ("t", 1): 1})

    assert offsets(fresh) == [(0, 7), (0, 8), (0, 5), (0, 9)]
    assert ranges == {("t", 0): (5, 9)}


def test_partitions_of_two_topics_are_kept_apart() -> None:
    fresh, ranges = _new_rows([row(0, 1, "a"), row(0, 1, "b"), row(0, 1, "a")], {})

    assert len(fresh) == 2
    assert ranges == {("a", 0): (1, 1), ("b", 0): (1, 1)}
