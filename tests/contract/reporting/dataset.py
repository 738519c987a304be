"""A small district with hand-checked answers for every report (see the test modules).

Tenant `district-a`; `as_of` is 2025-09-15 12:00 UTC and the recent window the 7 days before it
(2025-09-09 .. 2025-09-15).

Schools and roster learners (36 active; s10 left the roster: a tombstone):
- school-n: n01..n12 grade 4, n13..n16 grade 5                 (16)
- school-s: s01..s09 grade 4                                     (9)
- school-e: e01..e09 grade 5, e10..e11 grade 3                   (11)
Subgroups: ell = n01..n12 (12); iep = s01..s05 (5); frl = every learner but n13..n16, e10, e11 (30).

Class c1 (school-n, grade 4): n01..n05 enrolled; mastery evidence for n01..n04:
- n01: add 0.97 M (5 attempts), sub 0.96 M (4), mul 0.95 M (3)          -> ready
- n02: add 0.2 (6; was 0.15 on 09-01), sub 0.3 (2), struggling on add (repeated_error, sign, 6)
- n03: add 0.97 M, sub 0.97 M, mul 0.6 (4; on 09-02)                      -> 2/3 mastered
- n04: add 0.96 M, sub 0.96 M, mul 0.96 M; struggling on mul on 08-20 (outside the window)
Activity of c1 (item attempts unless said):
- n01: 3 correct on 09-14, 60 s each
- n02: 4 on 09-13 10:00..10:03, 30 s each: sign (add), sign (add), carry (add), correct
- n03: 1 correct on 09-14 (45 s) + a resource on 09-14 (300 s); 2 wrong on 09-01 (carry, sub)
- n04: 3 correct on 09-12, 20 s each
- n06 (not enrolled in c1: left it): 1 correct on 09-02 (15 s)
Goals: n02 g1 on add (target 2025-10-01), n01 g2 on div (no evidence yet).
Reflections on 09-16 (after as_of): n02 r1 on add (confidence 0.4), n04 r2 on mul (no confidence).
Tenant `district-b` has a learner n01 too, with other values: it must never show.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from trellis.common.pb.events.v1 import activity_pb2, envelope_pb2, mastery_pb2, roster_pb2
from trellis.reporting.rows import (
    Position,
    Row,
    activity_rows,
    mastery_rows,
    roster_rows,
)
from trellis.reporting.store.base import ReportingStore

TENANT = "district-a"
OTHER = "district-b"
AS_OF = datetime(2025, 9, 15, 12, 0, tzinfo=UTC)
SINCE = datetime(2025, 9, 9, tzinfo=UTC)
M = mastery_pb2.MASTERY_LEVEL_MASTERED
P = mastery_pb2.MASTERY_LEVEL_PRACTICING
F = mastery_pb2.MASTERY_LEVEL_FAMILIAR

MASTERY_TOPIC = "d.mastery"
ACTIVITY_TOPIC = "d.activity"
ROSTER_TOPIC = "d.roster"


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def at(day: int, hour: int = 10, minute: int = 0, month: int = 9) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


class Builder:
    def __init__(self, ids: Callable[[str], str] = str) -> None:
        # Learner ids as stored (a gRPC test maps them to the pseudonyms of SIS ids).
        self.ids = ids
        self.tables: dict[str, list[Row]] = defaultdict(list)
        self.offsets: dict[str, int] = defaultdict(int)

    def _position(self, topic: str) -> Position:
        offset = self.offsets[topic]
        self.offsets[topic] += 1
        return Position(topic, 0, offset)

    def _add(self, pairs: list[tuple[str, Row]]) -> None:
        for table, row in pairs:
            self.tables[table].append(row)

    def envelope(
        self,
        learner: str,
        when: datetime,
        tenant: str = TENANT,
        class_id: str = "c1",
        **payload: Any,
    ) -> envelope_pb2.Envelope:
        n = sum(self.offsets.values())
        return envelope_pb2.Envelope(
            event_id=f"e{n:04d}",
            tenant_id=tenant,
            school_id="school-n",
            class_id=class_id,
            learner_id=self.ids(learner),
            occurred_at=_ts(when),
            **payload,
        )

    def mastery(
        self,
        learner: str,
        skill: str,
        p: float,
        level: int,
        attempts: int,
        when: datetime,
        p_before: float = 0.3,
        tenant: str = TENANT,
        class_id: str = "c1",
    ) -> None:
        envelope = self.envelope(
            learner,
            when,
            tenant,
            class_id,
            mastery_updated=mastery_pb2.MasteryUpdated(
                skill_id=skill, p_before=p_before, p_after=p, level=level, attempts=attempts
            ),
        )  # type: ignore[arg-type]
        self._add(mastery_rows(envelope, self._position(MASTERY_TOPIC)))

    def struggling(self, learner: str, skill: str, tag: str, attempts: int, when: datetime) -> None:
        envelope = self.envelope(
            learner,
            when,
            struggling_detected=mastery_pb2.StrugglingDetected(
                skill_id=skill, reason="repeated_error", error_tag=tag, attempts=attempts
            ),
        )  # type: ignore[arg-type]
        self._add(mastery_rows(envelope, self._position(MASTERY_TOPIC)))

    def attempt(
        self,
        learner: str,
        skill: str,
        when: datetime,
        correct: bool,
        seconds: float,
        tag: str = "",
        tenant: str = TENANT,
    ) -> None:
        envelope = self.envelope(
            learner,
            when,
            tenant,
            item_attempted=activity_pb2.ItemAttempted(
                item_id=f"item-{skill}",
                skill_ids=[skill],
                correct=correct,
                duration_seconds=seconds,
                error_tag=tag,
            ),
        )  # type: ignore[arg-type]
        self._add(activity_rows(envelope, self._position(ACTIVITY_TOPIC)))

    def activity(self, learner: str, when: datetime, **payload: Any) -> None:
        envelope = self.envelope(learner, when, **payload)
        self._add(activity_rows(envelope, self._position(ACTIVITY_TOPIC)))

    def roster(self, tenant: str, kind: str, entity: Any) -> None:
        if kind == "learner":
            entity.sourced_id = self.ids(entity.sourced_id)
        if kind == "enrollment":
            entity.user_id = self.ids(entity.user_id)
        record = roster_pb2.RosterRecord(tenant_id=tenant, **{kind: entity})
        key = f"{tenant}/{kind}/{entity.sourced_id}".encode()
        self._add(roster_rows(key, record, self._position(ROSTER_TOPIC)))

    def tombstone(self, tenant: str, kind: str, entity_id: str) -> None:
        entity_id = self.ids(entity_id) if kind == "learner" else entity_id
        key = f"{tenant}/{kind}/{entity_id}".encode()
        self._add(roster_rows(key, None, self._position(ROSTER_TOPIC)))


def learners() -> list[tuple[str, str, str, list[str]]]:
    """(learner, school, grade, subgroups) of the active roster of district-a."""
    out = []
    for i in range(1, 17):
        grade = "4" if i <= 12 else "5"
        groups = ["ell", "frl"] if i <= 12 else []
        out.append((f"n{i:02d}", "school-n", grade, groups))
    for i in range(1, 10):
        out.append((f"s{i:02d}", "school-s", "4", (["iep"] if i <= 5 else []) + ["frl"]))
    for i in range(1, 12):
        grade = "5" if i <= 9 else "3"
        out.append((f"e{i:02d}", "school-e", grade, ["frl"] if i <= 9 else []))
    return out


def build(ids: Callable[[str], str] = str) -> dict[str, list[Row]]:
    b = Builder(ids)
    for school in ("school-n", "school-s", "school-e"):
        b.roster(TENANT, "org", roster_pb2.Org(sourced_id=school, name=school, type="school"))
    b.roster(
        TENANT,
        "school_class",
        roster_pb2.SchoolClass(sourced_id="c1", school_id="school-n", grade="4", subject="math"),
    )
    for learner, school, grade, groups in learners():
        b.roster(
            TENANT,
            "learner",
            roster_pb2.Learner(sourced_id=learner, school_id=school, grade=grade, subgroups=groups),
        )
    b.roster(
        TENANT, "learner", roster_pb2.Learner(sourced_id="s10", school_id="school-s", grade="4")
    )
    b.tombstone(TENANT, "learner", "s10")
    for learner in ("n01", "n02", "n03", "n04", "n05"):
        b.roster(
            TENANT,
            "enrollment",
            roster_pb2.Enrollment(
                sourced_id=f"en-{learner}",
                class_id="c1",
                user_id=learner,
                role="learner",
                school_id="school-n",
            ),
        )
    b.roster(
        TENANT,
        "enrollment",
        roster_pb2.Enrollment(
            sourced_id="en-t1", class_id="c1", user_id="t1", role="teacher", school_id="school-n"
        ),
    )
    b.roster(OTHER, "learner", roster_pb2.Learner(sourced_id="n01", school_id="x", grade="4"))

    d10 = at(10)
    b.mastery("n01", "add", 0.97, M, 5, d10)
    b.mastery("n01", "sub", 0.96, M, 4, d10)
    b.mastery("n01", "mul", 0.95, M, 3, d10)
    b.mastery("n02", "add", 0.15, P, 3, at(1), p_before=0.1)
    b.mastery("n02", "add", 0.2, P, 6, at(13), p_before=0.15)
    b.mastery("n02", "sub", 0.3, P, 2, d10)
    b.struggling("n02", "add", "sign", 6, at(13, 10, 4))
    b.mastery("n03", "add", 0.97, M, 5, d10)
    b.mastery("n03", "sub", 0.97, M, 5, d10)
    b.mastery("n03", "mul", 0.6, F, 4, at(2))
    b.mastery("n04", "add", 0.96, M, 3, d10)
    b.mastery("n04", "sub", 0.96, M, 3, d10)
    b.mastery("n04", "mul", 0.96, M, 3, d10)
    b.struggling("n04", "mul", "", 5, at(20, month=8))
    b.mastery("n01", "add", 0.1, P, 1, d10, tenant=OTHER)

    for minute in range(3):
        b.attempt("n01", "add", at(14, 9, minute), True, 60)
    b.attempt("n02", "add", at(13, 10, 0), False, 30, "sign")
    b.attempt("n02", "add", at(13, 10, 1), False, 30, "sign")
    b.attempt("n02", "add", at(13, 10, 2), False, 30, "carry")
    b.attempt("n02", "add", at(13, 10, 3), True, 30)
    b.attempt("n03", "mul", at(14, 11), True, 45)
    b.activity(
        "n03",
        at(14, 12),
        resource_engaged=activity_pb2.ResourceEngaged(
            resource_id="video-1", seconds=300, completion=1.0
        ),
    )
    b.attempt("n03", "sub", at(1, 9), False, 40, "carry")
    b.attempt("n03", "sub", at(1, 9, 1), False, 40, "carry")
    for minute in range(3):
        b.attempt("n04", "mul", at(12, 8, minute), True, 20)
    b.attempt("n01", "add", at(14, 9), False, 10, "sign", tenant=OTHER)
    # n06 practised in c1 once, long ago, and is not enrolled in it (left the class).
    b.attempt("n06", "add", at(2, 9), True, 15)
    b.activity(
        "n02",
        at(10, 8),
        goal_set=activity_pb2.GoalSet(
            goal_id="g1", skill_id="add", description="private words", target_date="2025-10-01"
        ),
    )
    b.activity("n01", at(11, 8), goal_set=activity_pb2.GoalSet(goal_id="g2", skill_id="div"))
    # After as_of (outside every other report's window): reflections.
    b.activity(
        "n02",
        at(16, 9),
        reflection_submitted=activity_pb2.ReflectionSubmitted(
            reflection_id="r1", text="I mix up the signs", skill_id="add", confidence=0.4
        ),
    )
    b.activity(
        "n04",
        at(16, 9),
        reflection_submitted=activity_pb2.ReflectionSubmitted(reflection_id="r2", skill_id="mul"),
    )
    return dict(b.tables)


def load(store: ReportingStore, ids: Callable[[str], str] = str) -> None:
    for table, rows in build(ids).items():
        store.insert(table, rows, f"dataset/{table}")


def timeline_window() -> tuple[datetime, datetime]:
    return AS_OF - timedelta(days=30), AS_OF
