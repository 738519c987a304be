"""Protobuf records and messages to and from the core's plain values."""

from __future__ import annotations

from datetime import datetime

from trellis.common.pb.events.v1 import catalog_pb2, mastery_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2 as mastery_api
from trellis.common.pb.recommender.v1 import recommender_pb2
from trellis.recommender.grouping import Grouping
from trellis.recommender.model import (
    FAMILIAR,
    MASTERED,
    NOT_STARTED,
    PRACTICING,
    REVIEW_DUE,
    Item,
    LearnerState,
    Pin,
    Profile,
    Recommendation,
    Resource,
    Skill,
    SkillState,
)
from trellis.recommender.paths import Path

_LEVELS = {
    mastery_pb2.MASTERY_LEVEL_NOT_STARTED: NOT_STARTED,
    mastery_pb2.MASTERY_LEVEL_PRACTICING: PRACTICING,
    mastery_pb2.MASTERY_LEVEL_FAMILIAR: FAMILIAR,
    mastery_pb2.MASTERY_LEVEL_MASTERED: MASTERED,
    mastery_pb2.MASTERY_LEVEL_REVIEW_DUE: REVIEW_DUE,
}


def skill(s: catalog_pb2.Skill) -> Skill:
    return Skill(s.skill_id, s.name, tuple(s.prerequisite_ids), s.mastery_threshold)


def item(i: catalog_pb2.Item) -> Item:
    return Item(i.item_id, tuple(i.skill_ids), i.difficulty, i.format, i.timed)


def resource(r: catalog_pb2.Resource) -> Resource:
    return Resource(
        r.resource_id,
        tuple(r.skill_ids),
        tuple(r.interest_tags),
        r.modality,
        r.minutes,
        tuple(r.accessibility),
        r.title,
    )


def learner_state(message: mastery_api.LearnerMastery, now: datetime) -> LearnerState:
    states = []
    for s in message.skills:
        days = None
        if s.HasField("last_practiced_at"):
            last = s.last_practiced_at.ToDatetime(tzinfo=now.tzinfo)
            days = max(0.0, (now - last).total_seconds() / 86_400)
        states.append(
            SkillState(
                s.skill_id,
                s.p_mastered,
                _LEVELS.get(s.level, NOT_STARTED),
                s.attempts,
                s.struggling,
                s.overridden,
                days,
            )
        )
    return LearnerState.of(*states)


def profile(message: mastery_api.LearnerProfile) -> Profile:
    return Profile(
        tuple(message.interests),
        message.modality,
        tuple(message.accommodations),
        tuple(Pin(p.activity_id, p.activity_kind, p.skill_id, p.note) for p in message.pins),
        tuple(g.skill_id for g in message.goals if g.skill_id),
    )


def recommendation(r: Recommendation) -> recommender_pb2.NextActivitiesResponse:
    return recommender_pb2.NextActivitiesResponse(
        recommendation_id=r.recommendation_id,
        degraded=r.degraded,
        explanation=r.explanation,
        options=[
            recommender_pb2.ActivityOption(
                activity_id=o.activity_id,
                activity_kind=o.activity_kind,
                skill_id=o.skill_id,
                explanation=o.explanation,
                predicted_success=o.predicted_success,
                reasons=[
                    recommender_pb2.Reason(code=reason.code, facts=dict(reason.facts))
                    for reason in o.reasons
                ],
            )
            for o in r.options
        ],
    )


def path(p: Path) -> recommender_pb2.LearningPathResponse:
    return recommender_pb2.LearningPathResponse(
        explanation=p.explanation,
        steps=[
            recommender_pb2.PathStep(
                skill_id=s.skill_id, p_mastered=s.p_mastered, explanation=s.explanation
            )
            for s in p.steps
        ],
    )


def grouping(g: Grouping) -> recommender_pb2.GroupLearnersResponse:
    explanation = g.explanation
    if g.unplaced_reasons:
        why = "; ".join(f"{lid}: {reason}" for lid, reason in sorted(g.unplaced_reasons.items()))
        explanation += f" Not placed: {why}."
    return recommender_pb2.GroupLearnersResponse(
        explanation=explanation,
        unplaced_learner_ids=list(g.unplaced),
        groups=[
            recommender_pb2.LearnerGroup(
                learner_ids=list(group.learner_ids),
                binding=group.binding,
                suggested_activity_id=group.suggested_activity_id,
                explanation=group.explanation,
            )
            for group in g.groups
        ],
    )
