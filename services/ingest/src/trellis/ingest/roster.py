"""What ingest knows of each tenant's roster: the school of every class, and which learners each
class enrols. Pure data.

Filled from the compacted roster topic by `adapters.follower` (tombstones included); backs the
tenant/school consistency check of activity events and the scope of teachers' events (a teacher
writes only about the learners of their classes, DESIGN.md §3a).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from trellis.common.pb.events.v1 import roster_pb2


@dataclass
class RosterView:
    """Written by the follower thread, read by the request handlers. Learner ids are the
    pseudonymous ids the roster topic holds."""

    # tenant id -> class id -> school id
    classes: dict[str, dict[str, str]] = field(default_factory=dict)
    # tenant id -> enrollment id -> (class id, learner id), for learners' enrollments
    _enrollments: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict, repr=False)
    # tenant id -> (class id, learner id) -> how many enrollments say so
    _enrolled: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def school_of(self, tenant_id: str, class_id: str) -> str | None:
        """The school that the roster places the class in; None when the roster lacks the class."""
        with self._lock:
            return self.classes.get(tenant_id, {}).get(class_id)

    def enrolled(self, tenant_id: str, class_id: str, learner_id: str) -> bool:
        """Whether the roster enrols the learner (pseudonymous id) in the class."""
        with self._lock:
            return self._enrolled.get(tenant_id, Counter())[(class_id, learner_id)] > 0

    def apply(self, record: roster_pb2.RosterRecord) -> None:
        kind = record.WhichOneof("entity")
        with self._lock:
            if kind == "school_class":
                tenant = self.classes.setdefault(record.tenant_id, {})
                tenant[record.school_class.sourced_id] = record.school_class.school_id
            elif kind == "enrollment":
                enrollment = record.enrollment
                self._drop_enrollment(record.tenant_id, enrollment.sourced_id)
                if enrollment.role == "learner":
                    pair = (enrollment.class_id, enrollment.user_id)
                    self._enrollments.setdefault(record.tenant_id, {})[enrollment.sourced_id] = pair
                    self._enrolled.setdefault(record.tenant_id, Counter())[pair] += 1

    def schools_named(self, tenant_id: str, record: roster_pb2.RosterRecord) -> set[str]:
        """The schools a roster record writes into: its own (an org is a school), and for a
        class or an enrollment the school the roster places the class in now, if known."""
        kind = record.WhichOneof("entity")
        if kind == "org":
            return {record.org.sourced_id}
        if kind == "learner":
            return {record.learner.school_id}
        if kind == "school_class":
            named, class_id = record.school_class.school_id, record.school_class.sourced_id
        elif kind == "enrollment":
            named, class_id = record.enrollment.school_id, record.enrollment.class_id
        else:
            return {""}
        placed = self.school_of(tenant_id, class_id)
        return {named} if placed is None else {named, placed}

    def remove(self, tenant_id: str, kind: str, entity_id: str) -> None:
        """A tombstone of the roster topic: the record of that key is gone."""
        with self._lock:
            if kind == "school_class":
                self.classes.get(tenant_id, {}).pop(entity_id, None)
            elif kind == "enrollment":
                self._drop_enrollment(tenant_id, entity_id)

    def _drop_enrollment(self, tenant_id: str, enrollment_id: str) -> None:
        pair = self._enrollments.get(tenant_id, {}).pop(enrollment_id, None)
        if pair is not None:
            counts = self._enrolled[tenant_id]
            counts[pair] -= 1
            if counts[pair] <= 0:
                del counts[pair]
