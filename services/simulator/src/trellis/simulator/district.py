"""A synthetic district and its catalog: pure, deterministic under a seed (no I/O, no clock).

Schools, grades, classes, teachers and learners (with their latent traits, which only the
simulator knows), skills with a prerequisite DAG (optionally with CASE-style URIs), items with
difficulty and resources with interest tags and modalities. `roster_records` and
`catalog_records` turn it into the contracts that ingest accepts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np

from trellis.common.pb.events.v1 import catalog_pb2, roster_pb2

SCHOOL_NAMES = (
    "north", "south", "east", "west", "river", "hill", "lake", "park", "oak", "maple",
)  # fmt: skip
# Per-grade strands of a math curriculum, in teaching order (prerequisites come earlier).
SKILL_BANK = (
    ("place-value", "Place value"),
    ("frac-equiv", "Equivalent fractions"),
    ("frac-add-like", "Add fractions with like denominators"),
    ("frac-mult", "Multiply fractions"),
    ("frac-add-unlike", "Add fractions with unlike denominators"),
    ("decimals", "Decimals and fractions"),
    ("frac-word", "Fraction word problems"),
    ("area-perimeter", "Area and perimeter"),
    ("volume", "Volume"),
    ("line-plots", "Line plots"),
    ("coordinates", "Coordinate plane"),
    ("patterns", "Numerical patterns"),
    ("order-of-ops", "Order of operations"),
    ("frac-divide", "Divide fractions"),
    ("ratios", "Ratios"),
    ("percent", "Percent"),
)
INTERESTS = ("sports", "music", "animals", "space", "art", "games", "cooking", "nature")
MODALITIES = ("video", "text", "audio", "interactive")
ITEM_FORMATS = ("multiple_choice", "open_response", "timed_drill")
ACCOMMODATIONS = ("extended_time", "text_to_speech", "reduced_item_count")
SUBGROUPS = ("ell", "iep", "frl")
CASE_NAMESPACE = uuid.UUID("6f1c3c2e-6c1e-4a43-9d0a-7a1f3e1b5c11")
DEFAULT_START = datetime(2026, 9, 7, tzinfo=UTC)  # a Monday


@dataclass(frozen=True)
class DistrictConfig:
    seed: int = 7
    tenant_id: str = "demo-district"
    learners: int = 48
    schools: int = 1
    grades: tuple[str, ...] = ("5",)
    classes_per_grade: int = 2  # per school
    skills_per_grade: int = 6
    items_per_skill: int = 6
    resources_per_skill: int = 2
    case_uris: bool = True
    # Learner kinds: the rest are "typical".
    strugglers: float = 0.15
    accelerators: float = 0.15
    accommodations: float = 0.08
    # Share of items (of skills with prerequisites) that also exercise their first prerequisite.
    multi_skill_items: float = 0.0

    def __post_init__(self) -> None:
        if self.learners < 1 or self.schools < 1 or not self.grades:
            raise ValueError("a district needs learners, schools and grades")
        if self.schools > len(SCHOOL_NAMES) or self.skills_per_grade > len(SKILL_BANK):
            raise ValueError(
                f"at most {len(SCHOOL_NAMES)} schools and {len(SKILL_BANK)} skills per grade"
            )


@dataclass(frozen=True)
class Skill:
    skill_id: str
    name: str
    grade: str
    prerequisite_ids: tuple[str, ...]
    case_uri: str
    # Skill-level ground truth; each learner's parameters vary around these.
    prior: float
    learn: float
    guess: float
    slip: float
    forget: float  # per day


@dataclass(frozen=True)
class Item:
    item_id: str
    skill_id: str  # the skill it is filed under (policies follow it)
    difficulty: float  # logit scale, 0 = average
    format: str
    # Further skills it exercises (a prerequisite): answered well only when all are known.
    extra_skill_ids: tuple[str, ...] = ()

    @property
    def skill_ids(self) -> tuple[str, ...]:
        return (self.skill_id, *self.extra_skill_ids)


@dataclass(frozen=True)
class Resource:
    resource_id: str
    skill_id: str
    title: str
    interest_tags: tuple[str, ...]
    modality: str
    minutes: float
    accessibility: tuple[str, ...]


@dataclass(frozen=True)
class SchoolClass:
    class_id: str
    school_id: str
    grade: str
    title: str
    teacher_id: str


@dataclass(frozen=True)
class Learner:
    """A learner as the SIS knows them (`learner_id` is the SIS id), plus latent traits."""

    learner_id: str
    index: int
    school_id: str
    class_id: str
    grade: str
    kind: str  # "typical", "struggler", "accelerator"
    learning_rate: float  # multiplies each skill's learn rate
    prior_shift: float  # added to each skill's prior
    interests: tuple[str, ...]
    modality: str
    accommodations: tuple[str, ...]
    subgroups: tuple[str, ...]


@dataclass(frozen=True)
class District:
    config: DistrictConfig
    schools: tuple[tuple[str, str], ...]  # (school_id, name)
    classes: tuple[SchoolClass, ...]
    learners: tuple[Learner, ...]
    skills: tuple[Skill, ...]
    items: tuple[Item, ...]
    resources: tuple[Resource, ...]
    items_by_skill: dict[str, tuple[Item, ...]] = field(default_factory=dict)
    resources_by_skill: dict[str, tuple[Resource, ...]] = field(default_factory=dict)

    def skills_of_grade(self, grade: str) -> tuple[Skill, ...]:
        return tuple(s for s in self.skills if s.grade == grade)

    @property
    def skill_by_id(self) -> dict[str, Skill]:
        return {s.skill_id: s for s in self.skills}


def _skills(config: DistrictConfig, rng: np.random.Generator) -> list[Skill]:
    skills: list[Skill] = []
    previous_grade_last: str | None = None
    for grade in config.grades:
        grade_skills: list[Skill] = []
        for k in range(config.skills_per_grade):
            key, name = SKILL_BANK[k]
            skill_id = f"g{grade}.{key}"
            prerequisites: tuple[str, ...]
            if k == 0:
                prerequisites = (previous_grade_last,) if previous_grade_last else ()
            else:
                # The previous strand, and sometimes one more from earlier: a DAG by construction.
                chosen = {grade_skills[k - 1].skill_id}
                if k >= 2 and rng.random() < 0.4:
                    chosen.add(grade_skills[int(rng.integers(0, k - 1))].skill_id)
                prerequisites = tuple(sorted(chosen))
            case_uri = (
                f"https://case.example.org/uri/{uuid.uuid5(CASE_NAMESPACE, skill_id)}"
                if config.case_uris
                else ""
            )
            grade_skills.append(
                Skill(
                    skill_id=skill_id,
                    name=name,
                    grade=grade,
                    prerequisite_ids=prerequisites,
                    case_uri=case_uri,
                    prior=float(rng.uniform(0.05, 0.3)),
                    learn=float(rng.uniform(0.08, 0.25)),
                    guess=float(rng.uniform(0.12, 0.3)),
                    slip=float(rng.uniform(0.05, 0.15)),
                    forget=float(rng.uniform(0.0, 0.01)),
                )
            )
        skills += grade_skills
        previous_grade_last = grade_skills[-1].skill_id
    return skills


def _items(config: DistrictConfig, skills: list[Skill], rng: np.random.Generator) -> list[Item]:
    items = []
    for skill in skills:
        difficulties = np.sort(rng.normal(0.0, 0.8, config.items_per_skill))
        for j, difficulty in enumerate(difficulties, start=1):
            items.append(
                Item(
                    item_id=f"{skill.skill_id}.q{j}",
                    skill_id=skill.skill_id,
                    difficulty=round(float(difficulty), 3),
                    format=ITEM_FORMATS[int(rng.integers(0, len(ITEM_FORMATS)))],
                )
            )
    if config.multi_skill_items > 0:
        # A generator of its own: the rest of the district stays what it is without them.
        extra = np.random.default_rng([config.seed, 3])
        prerequisites = {s.skill_id: s.prerequisite_ids for s in skills}
        items = [
            replace(item, extra_skill_ids=prerequisites[item.skill_id][:1])
            if prerequisites[item.skill_id] and extra.random() < config.multi_skill_items
            else item
            for item in items
        ]
    return items


def _resources(
    config: DistrictConfig, skills: list[Skill], rng: np.random.Generator
) -> list[Resource]:
    resources = []
    for skill in skills:
        for j in range(1, config.resources_per_skill + 1):
            tags = tuple(sorted(rng.choice(INTERESTS, size=2, replace=False).tolist()))
            modality = MODALITIES[int(rng.integers(0, len(MODALITIES)))]
            accessibility = {"video": ("captions",), "audio": ("transcript",)}.get(
                modality, ("screen_reader",)
            )
            resources.append(
                Resource(
                    resource_id=f"{skill.skill_id}.r{j}",
                    skill_id=skill.skill_id,
                    title=f"{skill.name}: {tags[0]} {modality}",
                    interest_tags=tags,
                    modality=modality,
                    minutes=float(rng.choice([3, 5, 8, 12])),
                    accessibility=accessibility,
                )
            )
    return resources


def _learner(
    config: DistrictConfig,
    index: int,
    width: int,
    school_class: SchoolClass,
    rng: np.random.Generator,
) -> Learner:
    draw = rng.random()
    if draw < config.strugglers:
        kind, rate, shift = "struggler", rng.uniform(0.25, 0.5), -0.1
    elif draw < config.strugglers + config.accelerators:
        kind, rate, shift = "accelerator", rng.uniform(1.8, 3.0), 0.2
    else:
        kind, rate, shift = "typical", float(np.exp(rng.normal(0.0, 0.3))), 0.0
    accommodations: tuple[str, ...] = ()
    if rng.random() < config.accommodations:
        count = int(rng.integers(1, 3))
        accommodations = tuple(sorted(rng.choice(ACCOMMODATIONS, size=count, replace=False)))
    subgroups = tuple(g for g in SUBGROUPS if rng.random() < 0.12)
    if accommodations and "iep" not in subgroups:
        subgroups = tuple(sorted((*subgroups, "iep")))
    return Learner(
        learner_id=f"stu-{index:0{width}d}",
        index=index,
        school_id=school_class.school_id,
        class_id=school_class.class_id,
        grade=school_class.grade,
        kind=kind,
        learning_rate=round(float(rate), 4),
        prior_shift=shift,
        interests=tuple(sorted(rng.choice(INTERESTS, size=2, replace=False).tolist())),
        modality=MODALITIES[int(rng.integers(0, len(MODALITIES)))],
        accommodations=accommodations,
        subgroups=subgroups,
    )


def build_district(config: DistrictConfig) -> District:
    rng = np.random.default_rng([config.seed, 0])
    schools = tuple(
        (f"s-{name}", f"{name.title()} Elementary") for name in SCHOOL_NAMES[: config.schools]
    )
    classes: list[SchoolClass] = []
    teacher = 0
    for grade in config.grades:
        letter = 0  # class letters run across the district per grade: c-5a, c-5b, c-5c, ...
        for school_id, _ in schools:
            for _ in range(config.classes_per_grade):
                teacher += 1
                suffix = "".join(
                    chr(ord("a") + d)
                    for d in ([letter] if letter < 26 else [letter // 26 - 1, letter % 26])
                )
                classes.append(
                    SchoolClass(
                        class_id=f"c-{grade}{suffix}",
                        school_id=school_id,
                        grade=grade,
                        title=f"Grade {grade} Math {suffix.upper()}",
                        teacher_id=f"tch-{teacher:02d}",
                    )
                )
                letter += 1
    skills = _skills(config, rng)
    items = _items(config, skills, rng)
    resources = _resources(config, skills, rng)
    width = max(3, len(str(config.learners)))
    learners = tuple(
        _learner(config, i, width, classes[(i - 1) * len(classes) // config.learners], rng)
        for i in range(1, config.learners + 1)
    )
    return District(
        config=config,
        schools=schools,
        classes=tuple(classes),
        learners=learners,
        skills=tuple(skills),
        items=tuple(items),
        resources=tuple(resources),
        items_by_skill={
            s.skill_id: tuple(i for i in items if i.skill_id == s.skill_id) for s in skills
        },
        resources_by_skill={
            s.skill_id: tuple(r for r in resources if r.skill_id == s.skill_id) for s in skills
        },
    )


def catalog_records(district: District) -> list[catalog_pb2.CatalogRecord]:
    """Skills (prerequisites first), then items, then resources."""
    records = []
    for s in district.skills:
        records.append(
            catalog_pb2.CatalogRecord(
                skill=catalog_pb2.Skill(
                    skill_id=s.skill_id,
                    case_uri=s.case_uri,
                    name=s.name,
                    subject="math",
                    grade=s.grade,
                    prerequisite_ids=s.prerequisite_ids,
                )
            )
        )
    for i in district.items:
        records.append(
            catalog_pb2.CatalogRecord(
                item=catalog_pb2.Item(
                    item_id=i.item_id,
                    skill_ids=i.skill_ids,
                    difficulty=i.difficulty,
                    format=i.format,
                    timed=i.format == "timed_drill",
                )
            )
        )
    for r in district.resources:
        records.append(
            catalog_pb2.CatalogRecord(
                resource=catalog_pb2.Resource(
                    resource_id=r.resource_id,
                    skill_ids=[r.skill_id],
                    interest_tags=r.interest_tags,
                    modality=r.modality,
                    minutes=r.minutes,
                    accessibility=r.accessibility,
                    title=r.title,
                )
            )
        )
    return records


def roster_records(district: District) -> list[roster_pb2.RosterRecord]:
    """The district, its schools, classes, teacher and learner enrollments (SIS ids: ingest
    pseudonymizes learner and staff ids)."""
    tenant = district.config.tenant_id
    records = [
        roster_pb2.RosterRecord(
            org=roster_pb2.Org(
                sourced_id=tenant,
                name="Demo District" if tenant == "demo-district" else tenant,
                type="district",
            )
        )
    ]
    for school_id, name in district.schools:
        records.append(
            roster_pb2.RosterRecord(
                org=roster_pb2.Org(sourced_id=school_id, name=name, type="school", parent_id=tenant)
            )
        )
    for c in district.classes:
        records.append(
            roster_pb2.RosterRecord(
                school_class=roster_pb2.SchoolClass(
                    sourced_id=c.class_id,
                    school_id=c.school_id,
                    title=c.title,
                    grade=c.grade,
                    subject="math",
                )
            )
        )
        records.append(
            roster_pb2.RosterRecord(
                enrollment=roster_pb2.Enrollment(
                    sourced_id=f"enr-{c.teacher_id}-{c.class_id}",
                    class_id=c.class_id,
                    user_id=c.teacher_id,
                    role="teacher",
                    school_id=c.school_id,
                )
            )
        )
    for learner in district.learners:
        records.append(
            roster_pb2.RosterRecord(
                learner=roster_pb2.Learner(
                    sourced_id=learner.learner_id,
                    school_id=learner.school_id,
                    grade=learner.grade,
                    subgroups=learner.subgroups,
                )
            )
        )
        records.append(
            roster_pb2.RosterRecord(
                enrollment=roster_pb2.Enrollment(
                    sourced_id=f"enr-{learner.learner_id}",
                    class_id=learner.class_id,
                    user_id=learner.learner_id,
                    role="learner",
                    school_id=learner.school_id,
                )
            )
        )
    return records
