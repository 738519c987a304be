"""A small hand-made catalog shared by the recommender's unit tests.

count ─▶ add ─▶ multiply ─▶ fractions
           └──▶ subtract
shapes (no prerequisites)
"""

from __future__ import annotations

from trellis.recommender.model import (
    MASTERED,
    PRACTICING,
    Catalog,
    Item,
    LearnerState,
    Resource,
    Skill,
    SkillState,
)

SKILLS = [
    Skill("count", "Counting"),
    Skill("add", "Addition", ("count",)),
    Skill("subtract", "Subtraction", ("add",)),
    Skill("multiply", "Multiplication", ("add",)),
    Skill("fractions", "Fractions", ("multiply",)),
    Skill("shapes", "Shapes"),
]


def _items() -> list[Item]:
    items = []
    for skill in SKILLS:
        s = skill.skill_id
        items += [
            Item(f"{s}-easy", (s,), -2.0, "multiple_choice"),
            Item(f"{s}-mid", (s,), 0.0, "multiple_choice"),
            Item(f"{s}-open", (s,), 0.2, "open_response"),
            Item(f"{s}-hard", (s,), 2.0, "open_response"),
            Item(f"{s}-drill", (s,), 0.0, "timed_drill", timed=True),
        ]
    return items


def _resources() -> list[Resource]:
    out = []
    for skill in SKILLS:
        s = skill.skill_id
        out += [
            Resource(f"{s}-video", (s,), ("sports",), "video", 5, ("captions",), f"{s} video"),
            Resource(f"{s}-podcast", (s,), ("music",), "audio", 8, ("audio",), f"{s} podcast"),
            Resource(f"{s}-text", (s,), ("space",), "text", 10, (), f"{s} reading"),
        ]
    return out


CATALOG = Catalog.of(SKILLS, _items(), _resources())


def mastered(skill_id: str, **kw: object) -> SkillState:
    return SkillState(skill_id, 0.97, MASTERED, attempts=6, **kw)  # type: ignore[arg-type]


def practicing(skill_id: str, p: float = 0.5, **kw: object) -> SkillState:
    return SkillState(skill_id, p, PRACTICING, attempts=3, **kw)  # type: ignore[arg-type]


def state(*states: SkillState) -> LearnerState:
    return LearnerState.of(*states)
