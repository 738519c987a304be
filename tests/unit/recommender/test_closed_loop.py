"""A simulated learner follows the policy's first option over time (the policy closed on a small
BKT and a ground-truth learner): recommendations advance through the prerequisite graph, and a
learner who cannot learn a skill gets support rather than harder items."""

from __future__ import annotations

import random

from tests.unit.recommender.fixtures import CATALOG
from trellis.recommender.model import (
    MASTERED,
    PRACTICING,
    LearnerState,
    Profile,
    SkillState,
)
from trellis.recommender.policy import (
    R_DIAGNOSTIC,
    R_SUPPORT_EASIER,
    R_SUPPORT_PREREQUISITE,
    R_TARGET_BAND,
    PolicyConfig,
    mastered_skills,
    recommend,
)

CONFIG = PolicyConfig(broaden_every=0)
GUESS, SLIP, LEARN, PRIOR = 0.2, 0.1, 0.2, 0.1


def bkt(p: float, correct: bool) -> float:
    if correct:
        post = p * (1 - SLIP) / (p * (1 - SLIP) + (1 - p) * GUESS)
    else:
        post = p * SLIP / (p * SLIP + (1 - p) * (1 - GUESS))
    return post + (1 - post) * LEARN


class Simulated:
    """Ground truth: a set of known skills; practising a skill whose prerequisites are known
    teaches it with probability 0.3 (never for skills in `unlearnable`)."""

    def __init__(
        self, known: set[str], unlearnable: frozenset[str] = frozenset(), seed: int = 1
    ) -> None:
        self.known = set(known)
        self.unlearnable = unlearnable
        self.rng = random.Random(seed)
        self.p: dict[str, float] = {}
        self.attempts: dict[str, int] = {}
        self.wrong_streak: dict[str, int] = {}

    def answer(self, skill_id: str) -> bool:
        correct = self.rng.random() < (1 - SLIP if skill_id in self.known else GUESS)
        ready = set(CATALOG.prerequisites(skill_id)) <= self.known
        if ready and skill_id not in self.unlearnable and self.rng.random() < 0.3:
            self.known.add(skill_id)
        self.p[skill_id] = bkt(self.p.get(skill_id, PRIOR), correct)
        self.attempts[skill_id] = self.attempts.get(skill_id, 0) + 1
        return correct

    def state(self) -> LearnerState:
        return LearnerState.of(
            *(
                SkillState(
                    s,
                    p,
                    MASTERED if p >= 0.95 else PRACTICING,
                    self.attempts[s],
                    struggling=self.attempts[s] >= 10 and p < 0.95,
                )
                for s, p in self.p.items()
            )
        )


def run(learner: Simulated, steps: int) -> list[tuple[str, tuple[str, ...], LearnerState]]:
    trace = []
    for _ in range(steps):
        current = learner.state()
        r = recommend(CATALOG, current, Profile(), tenant_id="t", learner_id="sim", config=CONFIG)
        items = [o for o in r.options if o.activity_kind == "item"]
        if not items:
            break
        choice = items[0]
        trace.append((choice.skill_id, choice.codes, current))
        learner.answer(choice.skill_id)
    return trace


def test_recommendations_advance_through_the_prerequisite_graph() -> None:
    learner = Simulated(known=set())
    trace = run(learner, 300)
    first_seen: dict[str, int] = {}
    for n, (skill_id, codes, state) in enumerate(trace):
        if R_DIAGNOSTIC in codes:
            continue  # placement probes may sit anywhere in the graph
        first_seen.setdefault(skill_id, n)
        done = mastered_skills(CATALOG, state, CONFIG)
        assert set(CATALOG.prerequisites(skill_id)) <= set(done)
    # after placement every skill was reached, each after its prerequisites
    assert set(first_seen) == set(CATALOG.skills)
    for skill_id in ("add", "multiply", "fractions"):
        (prerequisite,) = CATALOG.prerequisites(skill_id)
        assert first_seen[prerequisite] < first_seen[skill_id]
    assert set(mastered_skills(CATALOG, learner.state(), CONFIG)) == set(CATALOG.skills)


def test_prior_knowledge_is_skipped() -> None:
    learner = Simulated(known={"count", "add", "subtract", "multiply", "shapes"}, seed=3)
    trace = run(learner, 60)
    practised = [skill_id for skill_id, _, _ in trace]
    # after the diagnostic, the learner works on fractions, not on what they already know
    assert "fractions" in practised
    assert practised.count("count") <= 5


def test_a_struggling_learner_gets_support_not_harder_items() -> None:
    learner = Simulated(
        known={"count", "add", "shapes", "subtract"}, unlearnable=frozenset({"multiply"})
    )
    trace = run(learner, 80)
    flagged = [state for _, _, state in trace if state.get("multiply").struggling]
    assert flagged, "the learner should have been flagged as struggling"
    for state in flagged:
        r = recommend(CATALOG, state, Profile(), tenant_id="t", learner_id="sim", config=CONFIG)
        first = r.options[0].codes
        assert R_SUPPORT_EASIER in first or R_SUPPORT_PREREQUISITE in first
        harder = [o for o in r.options if o.skill_id == "multiply" and R_TARGET_BAND in o.codes]
        assert not harder
    # and fractions (beyond multiply) is never offered
    assert "fractions" not in {skill_id for skill_id, _, _ in trace}
