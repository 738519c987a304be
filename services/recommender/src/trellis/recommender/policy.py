"""The next-activities policy: pure functions from (catalog, learner state, profile, predictions)
to k options with reasons. The rules are described in docs/recommender.md; each one has its
reason code here (`R_*`)."""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from trellis.recommender.model import (
    AUDIO,
    DEFAULT_MASTERY_THRESHOLD,
    EXTENDED_TIME,
    MASTERED,
    REVIEW_DUE,
    TEXT_TO_SPEECH,
    Catalog,
    Item,
    LearnerState,
    Option,
    Profile,
    Reason,
    Recommendation,
    Resource,
)

R_PIN = "teacher_pin"
R_DIAGNOSTIC = "diagnostic_placement"
R_FRONTIER = "frontier"
R_ACCELERATION = "acceleration"
R_TARGET_BAND = "target_band"
R_OUTSIDE_BAND = "outside_band"
R_ESTIMATED = "estimated_success"
R_REVIEW = "spaced_review"
R_SUPPORT_EASIER = "support_easier_item"
R_SUPPORT_PREREQUISITE = "support_prerequisite"
R_SUPPORT_MODALITY = "support_other_modality"
R_INTEREST = "interest"
R_MODALITY = "preferred_modality"
R_BROADEN = "broaden"
R_ACCOMMODATION = "accommodation"
R_GOAL = "goal"

RECOMMENDATION_NAMESPACE = uuid.UUID("6f1d8f38-4a5e-5b7c-9a43-2f0c6f7e9d11")


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    band_low: float = 0.6
    band_high: float = 0.85
    k: int = 3
    mastery_threshold: float = DEFAULT_MASTERY_THRESHOLD
    # One recommendation in `broaden_every` (by its seed) offers a resource outside the learner's
    # declared interests and preferred modality; 0 never does.
    broaden_every: int = 5
    diagnostic_size: int = 3
    # A mastered skill not practised for this many days is due for review (when the mastery
    # service has not already said so with the level `review_due`).
    review_after_days: float = 21.0
    # How many of the most urgent frontier skills an answer draws its items and resources from
    # (at least k): bounds the work per request, and PredictItems' size, on large catalogs.
    frontier_breadth: int = 12
    # Fallback success estimate when PredictItems is unavailable (docs/recommender.md).
    guess: float = 0.2
    slip: float = 0.1


DEFAULT_CONFIG = PolicyConfig()


# --- mastery and the frontier -------------------------------------------------------------------


def threshold_of(catalog: Catalog, skill_id: str, config: PolicyConfig) -> float:
    skill = catalog.skills.get(skill_id)
    if skill is not None and skill.mastery_threshold > 0:
        return skill.mastery_threshold
    return config.mastery_threshold


def shown_mastered(
    catalog: Catalog, learner: LearnerState, skill_id: str, config: PolicyConfig
) -> bool:
    """Mastered by evidence, or by a teacher override: while an override stands the mastery
    service reports the teacher's value, so an override to mastered counts as mastered and an
    override to a low value does not (review due still counts as mastered)."""
    state = learner.skills.get(skill_id)
    if state is None:
        return False
    return state.level in (MASTERED, REVIEW_DUE) or state.p_mastered >= threshold_of(
        catalog, skill_id, config
    )


def mastered_skills(
    catalog: Catalog, learner: LearnerState, config: PolicyConfig
) -> dict[str, str]:
    """Every skill taken as mastered, with how: "shown", "override" (a teacher set it mastered),
    or "implied_by:<skill>" when a skill that depends on it is shown mastered (acceleration: the
    learner is not sent back to it), unless a teacher's override says it is not mastered."""
    out: dict[str, str] = {}
    shown = sorted(s for s in catalog.skills if shown_mastered(catalog, learner, s, config))
    for skill_id in shown:
        out[skill_id] = "override" if learner.get(skill_id).overridden else "shown"
    for skill_id in shown:
        for ancestor in sorted(catalog.ancestors(skill_id)):
            if ancestor not in out and not learner.get(ancestor).overridden:
                out[ancestor] = f"implied_by:{skill_id}"
    return out


def weakly_mastered(
    catalog: Catalog, learner: LearnerState, skill_id: str, config: PolicyConfig
) -> bool:
    """Without strong evidence of its own: P(mastered) below its threshold (e.g. mastered only by
    implication from a skill built on it, or not mastered at all), or recall decayed
    (`review_due`). Revisiting such a prerequisite can help a learner who struggles with what
    follows; revisiting one they have shown mastered costs an attempt and teaches nothing new."""
    state = learner.get(skill_id)
    return state.level == REVIEW_DUE or state.p_mastered < threshold_of(catalog, skill_id, config)


def prerequisites_met(catalog: Catalog, mastered: Mapping[str, str], skill_id: str) -> bool:
    return all(p in mastered for p in catalog.prerequisites(skill_id))


def frontier(catalog: Catalog, learner: LearnerState, config: PolicyConfig) -> list[str]:
    """Skills not mastered whose prerequisites all are, by id."""
    mastered = mastered_skills(catalog, learner, config)
    return sorted(
        s for s in catalog.skills if s not in mastered and prerequisites_met(catalog, mastered, s)
    )


# --- predicted success --------------------------------------------------------------------------


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def estimate_success(item: Item, learner: LearnerState, config: PolicyConfig) -> float:
    """Fallback when the mastery service cannot predict: the BKT probability of a correct answer
    on the item's weakest skill, P = p·(1-slip) + (1-p)·guess, shifted by the item's difficulty on
    the logit scale: sigmoid(logit(P) - difficulty)."""
    p = min((learner.get(s).p_mastered for s in item.skills), default=0.0)
    bkt = p * (1 - config.slip) + (1 - p) * config.guess
    return _sigmoid(_logit(bkt) - item.difficulty)


def in_band(p: float, config: PolicyConfig) -> bool:
    return config.band_low <= p <= config.band_high


# --- accommodations -----------------------------------------------------------------------------


def item_allowed(item: Item, profile: Profile) -> bool:
    """Extended time: no timed items."""
    return not (item.timed and EXTENDED_TIME in profile.accommodations)


def resource_allowed(resource: Resource, profile: Profile) -> bool:
    """Text-to-speech: only resources that can be heard (audio-capable)."""
    if TEXT_TO_SPEECH in profile.accommodations:
        return AUDIO in resource.accessibility or resource.modality == AUDIO
    return True


def _accommodation_reasons(profile: Profile) -> tuple[Reason, ...]:
    relevant = sorted(set(profile.accommodations) & {EXTENDED_TIME, TEXT_TO_SPEECH})
    return tuple(Reason.of(R_ACCOMMODATION, accommodation=a) for a in relevant)


# --- the policy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    catalog: Catalog
    learner: LearnerState
    profile: Profile
    config: PolicyConfig
    mastered: Mapping[str, str]
    predictions: Mapping[str, float]
    _success: dict[str, tuple[float, Reason | None]] = field(default_factory=dict)
    _ready: dict[str, bool] = field(default_factory=dict)

    def success(self, item: Item) -> tuple[float, Reason | None]:
        found = self._success.get(item.item_id)
        if found is None:
            if item.item_id in self.predictions:
                found = (self.predictions[item.item_id], None)
            else:
                p = estimate_success(item, self.learner, self.config)
                found = (p, Reason.of(R_ESTIMATED, source="p_mastered_and_difficulty"))
            self._success[item.item_id] = found
        return found

    def ready(self, skills: Iterable[str]) -> bool:
        for s in skills:
            ok = self._ready.get(s)
            if ok is None:
                ok = self._ready[s] = prerequisites_met(self.catalog, self.mastered, s)
            if not ok:
                return False
        return True

    def name(self, skill_id: str) -> str:
        skill = self.catalog.skills.get(skill_id)
        return skill.name if skill is not None and skill.name else skill_id


def goal_skills(catalog: Catalog, profile: Profile) -> set[str]:
    out: set[str] = set()
    for goal in profile.goal_skills:
        if goal in catalog.skills:
            out |= {goal, *catalog.ancestors(goal)}
    return out


def ordered_frontier(
    catalog: Catalog, learner: LearnerState, profile: Profile, mastered: Mapping[str, str]
) -> list[str]:
    """Frontier skills, most urgent first: toward a declared goal, then shallow in the graph,
    then closest to mastery, then by id."""
    on_goal = goal_skills(catalog, profile)
    skills = [
        s for s in catalog.skills if s not in mastered and prerequisites_met(catalog, mastered, s)
    ]
    return sorted(
        skills,
        key=lambda s: (s not in on_goal, catalog.depth.get(s, 0), -learner.get(s).p_mastered, s),
    )


def due_for_review(catalog: Catalog, learner: LearnerState, config: PolicyConfig) -> list[str]:
    """Mastered skills whose recall has decayed: level review_due, or not practised for
    review_after_days; most overdue first."""
    due = []
    for skill_id, state in learner.skills.items():
        if not shown_mastered(catalog, learner, skill_id, config):
            continue
        days = state.days_since_practice
        if state.level == REVIEW_DUE or (days is not None and days >= config.review_after_days):
            due.append((-(days or 0.0), skill_id))
    return [s for _, s in sorted(due)]


def candidate_items(
    catalog: Catalog, learner: LearnerState, profile: Profile, config: PolicyConfig, k: int = 0
) -> list[str]:
    """The items whose predicted success the policy may need (ask PredictItems for these): those
    of the most urgent frontier skills, of skills due for review, of struggling skills and their
    prerequisites."""
    mastered = mastered_skills(catalog, learner, config)
    breadth = max(config.frontier_breadth, k or config.k)
    wanted = set(ordered_frontier(catalog, learner, profile, mastered)[:breadth])
    wanted |= set(due_for_review(catalog, learner, config))
    for state in learner.skills.values():
        if state.struggling:
            wanted.add(state.skill_id)
            wanted.update(catalog.prerequisites(state.skill_id))
    ids = {
        item.item_id
        for skill_id in wanted
        for item in catalog.items_for(skill_id)
        if item_allowed(item, profile)
    }
    return sorted(ids)


def seed_of(
    tenant_id: str,
    learner_id: str,
    learner: LearnerState,
    profile: Profile,
    predictions: Mapping[str, float],
    k: int,
) -> str:
    """A digest of everything the recommendation depends on besides the catalog: the same inputs
    give the same seed, hence the same broadening decision and the same recommendation id. Days
    since practice count in whole days, so that the seed does not change from call to call."""
    digest = hashlib.sha256()
    digest.update(repr((tenant_id, learner_id, k)).encode())
    for skill_id, s in sorted(learner.skills.items()):
        days = None if s.days_since_practice is None else int(s.days_since_practice)
        fields = (skill_id, round(s.p_mastered, 4), s.level, s.attempts, s.struggling)
        digest.update(repr((*fields, s.overridden, days)).encode())
    digest.update(repr(profile).encode())
    digest.update(repr(sorted((i, round(p, 4)) for i, p in predictions.items())).encode())
    return digest.hexdigest()


def broadens(seed: str, config: PolicyConfig) -> bool:
    return config.broaden_every > 0 and int(seed[:8], 16) % config.broaden_every == 0


def recommend(
    catalog: Catalog,
    learner: LearnerState,
    profile: Profile,
    *,
    tenant_id: str,
    learner_id: str,
    config: PolicyConfig = DEFAULT_CONFIG,
    predictions: Mapping[str, float] | None = None,
    k: int = 0,
    degraded: bool = False,
) -> Recommendation:
    """k options: teacher pins first, then support (struggling) or diagnostic placement (new
    learner), spaced review, frontier items in the target band, resources by interest and modality,
    and now and then one that broadens; no two for the same skill and format unless nothing else
    qualifies. Only pins and diagnostic probes may name a skill whose prerequisites are
    unmastered."""
    k = k or config.k
    ctx = _Context(
        catalog,
        learner,
        profile,
        config,
        mastered_skills(catalog, learner, config),
        dict(predictions or {}),
    )
    seed = seed_of(tenant_id, learner_id, learner, profile, ctx.predictions, k)
    pins = _pins(ctx)
    if learner.is_new:
        leading = _diagnostic(ctx)
        mode = "new learner: a short diagnostic places them in the skill graph"
    else:
        leading = _support(ctx)
        mode = "struggling: support before anything harder" if leading else ""
    frontier_skills = ordered_frontier(catalog, learner, profile, ctx.mastered)[
        : max(config.frontier_breadth, k)
    ]
    review = _review(ctx)
    band_items, more_items, off_band = _frontier_items(ctx, frontier_skills)
    resources = _resources(ctx, frontier_skills)
    preferred = [*leading, *_ordered(ctx, band_items, more_items, review, resources), *off_band]

    chosen = _pick(pins, k, [], prefer_distinct=False)
    broaden = _broaden(ctx, frontier_skills) if broadens(seed, config) else None
    if broaden is not None and (broaden.skill_id, broaden.format) in _pairs(chosen):
        broaden = None
    room = k - len(chosen) - (1 if broaden is not None and k - len(chosen) >= 2 else 0)
    chosen += _pick(preferred, room, chosen)
    if (
        broaden is not None
        and len(chosen) < k
        and broaden.activity_id not in _ids(chosen)
        and (broaden.skill_id, broaden.format) not in _pairs(chosen)
    ):
        chosen.append(broaden)
    if len(chosen) < k:  # the broadening slot found nothing: fill it like any other
        chosen += _pick(preferred, k - len(chosen), chosen)
    accommodations = _accommodation_reasons(profile)
    options = tuple(o if R_PIN in o.codes else _with_reasons(o, accommodations) for o in chosen)
    rec_id = str(uuid.uuid5(RECOMMENDATION_NAMESPACE, seed + "|" + ",".join(_ids(options))))
    return Recommendation(rec_id, options, _summary(ctx, options, mode, degraded), degraded)


def _ordered(
    ctx: _Context,
    band_items: list[Option],
    more_items: list[Option],
    review: list[Option],
    resources: list[Option],
) -> list[Option]:
    """The best frontier item, one review item and the best resource first, so that a short
    answer mixes them; then the rest. With a declared goal, the items on the way to it come
    before any review that is only due by the calendar (`review_after_days`): every option the
    learner may pick instead of the first then still moves them towards the goal. A review the
    mastery service flags (`review_due`: recall decayed below its threshold) keeps its place."""
    on_goal = goal_skills(ctx.catalog, ctx.profile)
    if not on_goal:
        return [
            *band_items[:1],
            *review[:1],
            *resources[:1],
            *band_items[1:],
            *review[1:],
            *more_items,
            *resources[1:],
        ]
    goal_items = [o for o in [*band_items, *more_items] if o.skill_id in on_goal]
    other_items = [o for o in [*band_items, *more_items] if o.skill_id not in on_goal]
    decayed = [o for o in review if ctx.learner.get(o.skill_id).level == REVIEW_DUE]
    by_calendar = [o for o in review if o not in decayed]
    return [
        *goal_items[:1],
        *decayed[:1],
        *resources[:1],
        *goal_items[1:],
        *decayed[1:],
        *by_calendar,
        *other_items,
        *resources[1:],
    ]


def _ids(options: Iterable[Option]) -> list[str]:
    return [o.activity_id for o in options]


def _pairs(options: Iterable[Option]) -> set[tuple[str, str]]:
    return {(o.skill_id, o.format) for o in options}


def _with_reasons(option: Option, extra: tuple[Reason, ...]) -> Option:
    if not extra:
        return option
    return Option(
        option.activity_id,
        option.activity_kind,
        option.skill_id,
        option.format,
        option.reasons + extra,
        option.explanation,
        option.predicted_success,
    )


def _pick(
    candidates: list[Option], n: int, taken: list[Option], prefer_distinct: bool = True
) -> list[Option]:
    """Up to n options: first distinct by (skill, format); then, if that leaves slots empty,
    others that repeat a (skill, format) pair. Never the same activity twice."""
    if n <= 0:
        return []
    out: list[Option] = []
    ids = set(_ids(taken))
    pairs = _pairs(taken)
    for distinct in (True, False) if prefer_distinct else (False,):
        for option in candidates:
            if len(out) == n:
                return out
            if option.activity_id in ids:
                continue
            if distinct and (option.skill_id, option.format) in pairs:
                continue
            out.append(option)
            ids.add(option.activity_id)
            pairs.add((option.skill_id, option.format))
    return out


def _pins(ctx: _Context) -> list[Option]:
    """Teacher pins come first, in the teacher's order; a pin that breaks an accommodation (a timed
    item for extended time, a resource that cannot be heard for text-to-speech) is left out."""
    out = []
    for pin in ctx.profile.pins:
        if pin.activity_kind == "item":
            item = ctx.catalog.items.get(pin.activity_id)
            if item is not None and not item_allowed(item, ctx.profile):
                continue
            skill_id = pin.skill_id or (item.skills[0] if item and item.skills else "")
            fmt = item.format if item else "item"
            p = ctx.success(item)[0] if item else 0.0
        else:
            resource = ctx.catalog.resources.get(pin.activity_id)
            if resource is not None and not resource_allowed(resource, ctx.profile):
                continue
            skill_id = pin.skill_id or (resource.skills[0] if resource and resource.skills else "")
            fmt = resource.modality if resource else "resource"
            p = 0.0
        note = f" ({pin.note})" if pin.note else ""
        out.append(
            Option(
                pin.activity_id,
                pin.activity_kind,
                skill_id,
                fmt or pin.activity_kind,
                (Reason.of(R_PIN, note=pin.note) if pin.note else Reason.of(R_PIN),),
                f"Pinned by the teacher{note}.",
                p,
            )
        )
    return out


def _item_option(
    ctx: _Context, item: Item, skill_id: str, reasons: list[Reason], sentence: str
) -> Option:
    p, estimated = ctx.success(item)
    all_reasons = [*reasons, Reason.of("predicted_success", p_correct=p)]
    if estimated is not None:
        all_reasons.append(estimated)
    return Option(
        item.item_id, "item", skill_id, item.format or "item", tuple(all_reasons), sentence, p
    )


def _resource_option(
    resource: Resource, skill_id: str, reasons: list[Reason], sentence: str
) -> Option:
    return Option(
        resource.resource_id,
        "resource",
        skill_id,
        resource.modality or "resource",
        tuple(reasons),
        sentence,
        0.0,
    )


def _items(ctx: _Context, skill_id: str) -> list[Item]:
    return [
        i
        for i in ctx.catalog.items_for(skill_id)
        if item_allowed(i, ctx.profile) and ctx.ready(i.skills)
    ]


def _frontier_reasons(ctx: _Context, skill_id: str) -> list[Reason]:
    reasons = [Reason.of(R_FRONTIER, p_mastered=ctx.learner.get(skill_id).p_mastered)]
    implied = sorted(
        {
            ctx.mastered[p].split(":", 1)[1]
            for p in ctx.catalog.prerequisites(skill_id)
            if ctx.mastered.get(p, "").startswith("implied_by:")
        }
    )
    if implied:
        reasons.append(Reason.of(R_ACCELERATION, shown_mastered=",".join(implied)))
    if skill_id in goal_skills(ctx.catalog, ctx.profile):
        reasons.append(Reason.of(R_GOAL))
    return reasons


def _frontier_items(
    ctx: _Context, skills: list[str]
) -> tuple[list[Option], list[Option], list[Option]]:
    """Per frontier skill (not one the learner is struggling with): the item whose predicted
    success is nearest the band's centre, among those in the band (first list); the skill's other
    in-band items, one per format (second list, for more choice); skills with no item in the band
    give their nearest item to a fallback list used only when nothing else fills the k slots."""
    centre = (ctx.config.band_low + ctx.config.band_high) / 2
    best: list[Option] = []
    more: list[Option] = []
    off_band: list[Option] = []
    for skill_id in skills:
        if ctx.learner.get(skill_id).struggling:
            continue
        scored = sorted(
            ((abs(ctx.success(i)[0] - centre), i.item_id, i) for i in _items(ctx, skill_id)),
        )
        if not scored:
            continue
        banded = [i for _, _, i in scored if in_band(ctx.success(i)[0], ctx.config)]
        name = ctx.name(skill_id)
        reasons = _frontier_reasons(ctx, skill_id)
        accelerated = any(r.code == R_ACCELERATION for r in reasons)
        lead = "skips ahead of what they already showed" if accelerated else "is next"
        band = Reason.of(R_TARGET_BAND, low=ctx.config.band_low, high=ctx.config.band_high)
        # The best first; then one per other format; then the rest (chosen only when nothing
        # else qualifies, since they repeat a skill and format).
        firsts: dict[str, Item] = {}
        for item in banded:
            firsts.setdefault(item.format, item)
        ordered = [*firsts.values(), *(i for i in banded if i not in firsts.values())]
        for n, item in enumerate(ordered):
            p = ctx.success(item)[0]
            (best if n == 0 else more).append(
                _item_option(
                    ctx,
                    item,
                    skill_id,
                    [*reasons, band],
                    f"{name} {lead} (its prerequisites are mastered) and this item should be "
                    f"challenging but doable ({p:.0%} likely correct).",
                )
            )
        if not banded:
            item = scored[0][2]
            p = ctx.success(item)[0]
            outside = Reason.of(R_OUTSIDE_BAND, low=ctx.config.band_low, high=ctx.config.band_high)
            off_band.append(
                _item_option(
                    ctx,
                    item,
                    skill_id,
                    [*reasons, outside],
                    f"{name} {lead}; no item is in the target difficulty band, so this is the "
                    f"closest ({p:.0%} likely correct).",
                )
            )
    return best, more, off_band


def _review(ctx: _Context) -> list[Option]:
    """Mastered skills whose recall has decayed: level review_due, or not practised for
    review_after_days. The item nearest the band's centre, most overdue skill first."""
    centre = (ctx.config.band_low + ctx.config.band_high) / 2
    out = []
    for skill_id in due_for_review(ctx.catalog, ctx.learner, ctx.config):
        days = ctx.learner.get(skill_id).days_since_practice
        items = sorted(
            _items(ctx, skill_id), key=lambda i: (abs(ctx.success(i)[0] - centre), i.item_id)
        )
        if not items:
            continue
        facts = {"days_since_practice": days} if days is not None else {}
        out.append(
            _item_option(
                ctx,
                items[0],
                skill_id,
                [Reason.of(R_REVIEW, **facts)],
                f"{ctx.name(skill_id)} was mastered but is due for review so it is not forgotten.",
            )
        )
    return out


def _support(ctx: _Context) -> list[Option]:
    """For the struggling skill with the most attempts (not one taken as mastered): its easiest
    item, a prerequisite to revisit if one is mastered only on weak evidence (`weakly_mastered`),
    and a resource in another modality than the preferred one."""
    struggling = sorted(
        (
            s
            for s in ctx.learner.skills.values()
            # A skill taken as mastered (shown since, or implied) needs no more support.
            if s.struggling and s.skill_id in ctx.catalog.skills and s.skill_id not in ctx.mastered
        ),
        key=lambda s: (-s.attempts, s.skill_id),
    )
    if not struggling:
        return []
    state = struggling[0]
    skill_id = state.skill_id
    name = ctx.name(skill_id)
    out: list[Option] = []
    if ctx.ready([skill_id]):
        easiest = sorted(_items(ctx, skill_id), key=lambda i: (i.difficulty, i.item_id))
        if easiest:
            out.append(
                _item_option(
                    ctx,
                    easiest[0],
                    skill_id,
                    [
                        Reason.of(
                            R_SUPPORT_EASIER,
                            difficulty=easiest[0].difficulty,
                            attempts=state.attempts,
                        )
                    ],
                    f"Struggling with {name}: an easier item to rebuild confidence.",
                )
            )
    prerequisites = sorted(
        (
            p
            for p in ctx.catalog.prerequisites(skill_id)
            if ctx.ready([p]) and weakly_mastered(ctx.catalog, ctx.learner, p, ctx.config)
        ),
        key=lambda p: (ctx.learner.get(p).p_mastered, p),
    )
    for prerequisite in prerequisites:
        items = sorted(_items(ctx, prerequisite), key=lambda i: (-ctx.success(i)[0], i.item_id))
        resources = [
            r for r in ctx.catalog.resources_for(prerequisite) if resource_allowed(r, ctx.profile)
        ]
        reason = [Reason.of(R_SUPPORT_PREREQUISITE, struggling_skill=skill_id)]
        sentence = f"Struggling with {name}: revisit its prerequisite {ctx.name(prerequisite)}."
        if items:
            out.append(_item_option(ctx, items[0], prerequisite, reason, sentence))
            break
        if resources:
            out.append(_resource_option(resources[0], prerequisite, reason, sentence))
            break
    if ctx.ready([skill_id]):
        other = [
            r
            for r in ctx.catalog.resources_for(skill_id)
            if resource_allowed(r, ctx.profile)
            and (not ctx.profile.modality or r.modality != ctx.profile.modality)
        ]
        if other:
            resource = other[0]
            out.append(
                _resource_option(
                    resource,
                    skill_id,
                    [Reason.of(R_SUPPORT_MODALITY, modality=resource.modality or "unspecified")],
                    f"Struggling with {name}: the same idea presented another way "
                    f"({resource.modality or 'another format'}).",
                )
            )
    return out


def _diagnostic(ctx: _Context) -> list[Option]:
    """A short placement for a learner with no evidence: up to diagnostic_size skills that split
    the prerequisite graph. The first probe is the skill that settles the most skills whichever
    way the answer goes (min of ancestors+1 and descendants+1 is largest); the next ones are chosen
    the same way among the skills the earlier probes leave unsettled."""
    open_skills = set(ctx.catalog.skills)
    out: list[Option] = []
    while open_skills and len(out) < ctx.config.diagnostic_size:
        scored = []
        for s in open_skills:
            if not [i for i in ctx.catalog.items_for(s) if item_allowed(i, ctx.profile)]:
                continue
            below = len(ctx.catalog.ancestors(s) & open_skills) + 1
            above = len(ctx.catalog.descendants(s) & open_skills) + 1
            scored.append((-min(below, above), -(below + above), s))
        if not scored:
            break
        _, _, skill_id = min(scored)
        settled = {skill_id} | ctx.catalog.ancestors(skill_id) | ctx.catalog.descendants(skill_id)
        items = sorted(
            (i for i in ctx.catalog.items_for(skill_id) if item_allowed(i, ctx.profile)),
            key=lambda i: (abs(i.difficulty), i.item_id),
        )
        out.append(
            _item_option(
                ctx,
                items[0],
                skill_id,
                [Reason.of(R_DIAGNOSTIC, settles=len(settled & open_skills))],
                f"Placement: an average item on {ctx.name(skill_id)} tells whether the learner "
                f"already knows it and what it builds on.",
            )
        )
        open_skills -= settled
    return out


def _resources(ctx: _Context, skills: list[str]) -> list[Option]:
    """Resources for frontier skills that match a declared interest or the preferred modality,
    best matches first."""
    interests = set(ctx.profile.interests)
    scored = []
    for rank, skill_id in enumerate(skills):
        for r in ctx.catalog.resources_for(skill_id):
            if not resource_allowed(r, ctx.profile) or not ctx.ready(r.skills):
                continue
            shared = sorted(interests & set(r.interest_tags))
            modality = bool(ctx.profile.modality) and r.modality == ctx.profile.modality
            if not shared and not modality:
                continue
            reasons = [Reason.of(R_FRONTIER, p_mastered=ctx.learner.get(skill_id).p_mastered)]
            if shared:
                reasons.append(Reason.of(R_INTEREST, tags=",".join(shared)))
            if modality:
                reasons.append(Reason.of(R_MODALITY, modality=r.modality))
            why = (
                f"matches their interest in {', '.join(shared)}"
                if shared
                else f"is in their preferred format ({r.modality})"
            )
            scored.append(
                (
                    -(len(shared) + int(modality)),
                    rank,
                    r.resource_id,
                    _resource_option(
                        r, skill_id, reasons, f"A resource on {ctx.name(skill_id)} that {why}."
                    ),
                )
            )
    return [o for *_, o in sorted(scored)]


def _broaden(ctx: _Context, skills: list[str]) -> Option | None:
    """A resource on a frontier skill that shares none of the learner's interests and is not in
    their preferred modality: a chance to discover something new. Chosen by the seed."""
    interests = set(ctx.profile.interests)
    candidates = [
        (r, skill_id)
        for skill_id in skills
        for r in ctx.catalog.resources_for(skill_id)
        if resource_allowed(r, ctx.profile)
        and ctx.ready(r.skills)
        and not interests & set(r.interest_tags)
        and not (ctx.profile.modality and r.modality == ctx.profile.modality)
    ]
    if not candidates:
        return None
    digest = hashlib.sha256(repr(sorted(r.resource_id for r, _ in candidates)).encode())
    resource, skill_id = candidates[int(digest.hexdigest()[:8], 16) % len(candidates)]
    tags = ", ".join(resource.interest_tags) or resource.modality or "a new format"
    return _resource_option(
        resource,
        skill_id,
        [
            Reason.of(R_FRONTIER, p_mastered=ctx.learner.get(skill_id).p_mastered),
            Reason.of(R_BROADEN, every=ctx.config.broaden_every),
        ],
        f"Something different on {ctx.name(skill_id)} ({tags}) to broaden their interests.",
    )


def _summary(ctx: _Context, options: tuple[Option, ...], mode: str, degraded: bool) -> str:
    if not options:
        text = "Nothing to recommend: every skill in the catalog is mastered or has no activity."
        if not ctx.catalog.skills:
            text = "Nothing to recommend: the catalog of this tenant is empty."
    else:
        pins = sum(1 for o in options if R_PIN in o.codes)
        parts = [f"{len(options)} option(s)"]
        if pins:
            parts.append(f"{pins} pinned by the teacher")
        if mode:
            parts.append(mode)
        text = "; ".join(parts) + "."
    if degraded:
        text += (
            " Degraded: the learner profile was unavailable, so pins and interests are unknown "
            "and only untimed items and audio-capable resources are offered."
        )
    return text
