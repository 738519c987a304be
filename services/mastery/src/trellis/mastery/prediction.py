"""Prediction of the next attempt on an item: BKT's state together with the item's difficulty.

    p_bkt            = P(correct | BKT) = recall (1 - slip) + (1 - recall) guess, per skill
    logit(p_correct) = weight_bkt * mean over the item's skills of logit(p_bkt)
                       + weight_difficulty * difficulty(item) + intercept

with `recall` the skill's P(mastered) decayed to `now` (`trellis.mastery.domain.recall`). The
weights and difficulties are fitted offline (`trellis.mastery.fitting`) and travel with the BKT
parameters in one versioned `ModelParameters` set; an item the fit never saw has difficulty 0
(average), and the identity calibration (1, 0, 0) turns this back into plain BKT. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from trellis.mastery.domain import (
    DEFAULT,
    BktParameters,
    LearnerState,
    p_correct,
    recall,
)

#: Probabilities are kept this far from 0 and 1 before taking logits.
MIN_P = 1e-6


def logit(p: float) -> float:
    q = min(1.0 - MIN_P, max(MIN_P, p))
    return math.log(q / (1.0 - q))


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True, slots=True)
class Calibration:
    weight_bkt: float = 1.0
    weight_difficulty: float = 0.0
    intercept: float = 0.0

    def apply(self, p_bkt_logit: float, difficulty: float) -> float:
        z = self.weight_bkt * p_bkt_logit + self.weight_difficulty * difficulty + self.intercept
        return sigmoid(z)


@dataclass(frozen=True)
class ModelSet:
    """One versioned parameter set: BKT per skill, item difficulties, calibration."""

    version: str = DEFAULT.version
    skills: Mapping[str, BktParameters] = field(default_factory=dict)
    item_difficulty: Mapping[str, float] = field(default_factory=dict)
    calibration: Calibration = Calibration()

    def params_for_skill(self, skill_id: str) -> BktParameters:
        """Fitted parameters of the skill; the defaults (under this version) otherwise."""
        found = self.skills.get(skill_id)
        return self._defaults if found is None else found

    @cached_property
    def _defaults(self) -> BktParameters:
        # Once per set: asked for on every event of a skill without fitted parameters.
        return BktParameters(
            prior=DEFAULT.prior,
            learn=DEFAULT.learn,
            guess=DEFAULT.guess,
            slip=DEFAULT.slip,
            version=self.version,
        )

    def predict(
        self,
        state: LearnerState,
        item_id: str,
        skill_ids: Sequence[str],
        now: datetime,
        difficulty: float | None = None,
    ) -> float:
        """P(correct) of this learner's next attempt on the item at `now`. `difficulty` from the
        catalog is used when the fitted set does not know the item."""
        skills = list(dict.fromkeys(skill_ids))
        if skills:
            logits = []
            for skill_id in skills:
                params = self.params_for_skill(skill_id)
                skill = state.skills.get(skill_id)
                p = params.prior if skill is None else recall(skill, params, now)
                if skill is not None and skill.override is not None:
                    p = skill.override.p_mastered
                logits.append(logit(p_correct(p, params)))
            bkt = sum(logits) / len(logits)
        else:
            bkt = logit(p_correct(DEFAULT.prior, DEFAULT))
        known = self.item_difficulty.get(item_id)
        d = known if known is not None else (difficulty or 0.0)
        return self.calibration.apply(bkt, d)
