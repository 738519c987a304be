"""Small-cell suppression, primary and complementary, on hand-made cells (k = 10)."""

from __future__ import annotations

from trellis.reporting.suppression import Group, Suppression, suppress

SHOWN, PRIMARY, COMPLEMENTARY = Suppression.SHOWN, Suppression.PRIMARY, Suppression.COMPLEMENTARY


def g(key: str, n: int, mean: float = 0.5) -> Group:
    return Group(key, n, mean, 0.25)


def view(cells: list[Group]) -> list[tuple[str, int, Suppression]]:
    return [(c.key, c.learners, c.suppression) for c in cells]


def test_nothing_is_withheld_when_every_cell_is_large_enough() -> None:
    cells, total = suppress([g("b", 10), g("a", 12)], g("", 22), 10, partition=True)

    assert view(cells) == [("a", 12, SHOWN), ("b", 10, SHOWN)]
    assert total.learners == 22


def test_one_small_cell_takes_the_smallest_other_cell_with_it() -> None:
    # Schools of the dataset: e 11, n 16, s 9; total 36.
    cells, total = suppress(
        [g("school-n", 16), g("school-s", 9), g("school-e", 11)], g("", 36), 10, partition=True
    )

    assert view(cells) == [
        ("school-e", 0, COMPLEMENTARY),
        ("school-n", 16, SHOWN),
        ("school-s", 0, PRIMARY),
    ]
    # The withheld figures are masked, not just flagged.
    assert (cells[0].mean_mastery, cells[2].mean_mastery) == (0.0, 0.0)
    # What can be derived (36 - 16 = 20) is a group of two cells and >= 10 learners.
    assert total.learners == 36


def test_two_small_cells_summing_under_k_take_a_third() -> None:
    # Grades of the dataset: 3 has 2, 5 has 13, 4 has 21: 2 alone is under k and alone.
    cells, _ = suppress([g("3", 2), g("4", 21), g("5", 13)], g("", 36), 10, partition=True)
    assert view(cells) == [("3", 0, PRIMARY), ("4", 21, SHOWN), ("5", 0, COMPLEMENTARY)]

    cells, _ = suppress(
        [g("a", 3), g("b", 4), g("c", 30), g("d", 12)], g("", 49), 10, partition=True
    )
    # a + b = 7 < 10: d, the smallest shown, joins them.
    assert view(cells) == [
        ("a", 0, PRIMARY),
        ("b", 0, PRIMARY),
        ("c", 30, SHOWN),
        ("d", 0, COMPLEMENTARY),
    ]


def test_two_small_cells_summing_to_k_are_enough() -> None:
    cells, _ = suppress([g("a", 4), g("b", 6), g("c", 30)], g("", 40), 10, partition=True)
    assert view(cells) == [("a", 0, PRIMARY), ("b", 0, PRIMARY), ("c", 30, SHOWN)]


def test_a_total_under_k_withholds_everything() -> None:
    cells, total = suppress([g("a", 5), g("b", 4)], g("", 9), 10, partition=True)

    assert view(cells) == [("a", 0, PRIMARY), ("b", 0, PRIMARY)]
    assert (total.learners, total.suppression) == (0, PRIMARY)


def test_overlapping_groups_withhold_a_cell_whose_complement_is_small() -> None:
    # Subgroups of the dataset: ell 12, frl 30 (everyone else: 6 learners), iep 5; total 36.
    cells, total = suppress(
        [g("ell", 12), g("frl", 30), g("iep", 5)], g("", 36), 10, partition=False
    )

    assert view(cells) == [("ell", 12, SHOWN), ("frl", 0, COMPLEMENTARY), ("iep", 0, PRIMARY)]
    assert total.learners == 36


def test_the_minimum_size_is_a_parameter() -> None:
    cells, _ = suppress([g("a", 5), g("b", 6)], g("", 11), 5, partition=True)
    assert view(cells) == [("a", 5, SHOWN), ("b", 6, SHOWN)]
