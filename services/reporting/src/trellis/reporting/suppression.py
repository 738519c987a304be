"""Small-cell suppression of district rollups (pure: no I/O).

A rollup cell is a group of learners (a school, a grade, a subgroup) with aggregate figures. The
rule, for a minimum cell size k (settings: `reporting.min_cell_size`, default 10):

1. Primary: a cell of fewer than k learners is withheld (its count and its figures), and marked.
2. The total (every learner of the caller's scope) is published with the cells; if it is under k,
   everything is withheld.
3. Complementary, partitions (school, grade: each learner is in exactly one cell): total minus the
   shown cells gives the withheld cells' sum. So the withheld set must hold at least two cells
   and at least k learners together; while it does not, the smallest shown cell (by learners,
   then by key) is withheld too. What can be worked out is then an aggregate of k or more.
4. Complementary, overlapping groups (subgroups: a learner may be in several, or none): a cell's
   complement (total minus the cell: "everyone not in it") is derivable from the total, so a cell
   whose complement is under k learners is withheld too.

Across queries: the population of a rollup is fixed by the caller's scope (active roster
learners of their schools), whatever the dimension or the skill filter, so two queries of one
caller always split the same total; a skill filter changes the figures, never the groups. What
this does not cover: callers with different scopes comparing their answers.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace

__all__ = ["Group", "Suppression", "suppress"]


class Suppression(enum.Enum):
    SHOWN = "shown"
    PRIMARY = "primary"  # under the minimum size
    COMPLEMENTARY = "complementary"  # withheld so that another withheld cell stays hidden


@dataclass(frozen=True, slots=True)
class Group:
    key: str
    learners: int
    mean_mastery: float
    mastered_share: float
    suppression: Suppression = Suppression.SHOWN

    @property
    def withheld(self) -> bool:
        return self.suppression is not Suppression.SHOWN

    def masked(self, why: Suppression) -> Group:
        """The cell as published when withheld: no count, no figures."""
        return replace(self, learners=0, mean_mastery=0.0, mastered_share=0.0, suppression=why)


def suppress(
    groups: Sequence[Group], total: Group, min_size: int, *, partition: bool
) -> tuple[list[Group], Group]:
    """(cells, total) as they may be published, cells by key; withheld ones masked and marked."""
    cells = sorted(groups, key=lambda g: g.key)
    if total.learners < min_size:
        return (
            [g.masked(Suppression.PRIMARY) for g in cells],
            total.masked(Suppression.PRIMARY),
        )
    why: dict[str, Suppression] = {}
    for g in cells:
        if g.learners < min_size:
            why[g.key] = Suppression.PRIMARY
        elif not partition and total.learners - g.learners < min_size:
            why[g.key] = Suppression.COMPLEMENTARY
    if partition:
        while why:
            withheld = [g for g in cells if g.key in why]
            if len(withheld) >= 2 and sum(g.learners for g in withheld) >= min_size:
                break
            shown = [g for g in cells if g.key not in why]
            if not shown:
                break
            smallest = min(shown, key=lambda g: (g.learners, g.key))
            why[smallest.key] = Suppression.COMPLEMENTARY
    return [g.masked(why[g.key]) if g.key in why else g for g in cells], total
