"""What ingest knows of each tenant's roster: the shared roster view (the school of every class,
which learners each class enrols), the school of every learner's record, and which schools a
roster record writes into. Pure data.

Filled from the compacted roster topic by `adapters.follower` (tombstones included); backs the
tenant/school consistency check of activity events and the scope of teachers' events (a teacher
writes only about the learners of their classes, DESIGN.md §3a) and of callers scoped to schools
(`trellis.ingest.scope`: their events, and the learners their roster records name).
"""

from __future__ import annotations

from collections.abc import Callable

from trellis.common import roster
from trellis.common.pb.events.v1 import roster_pb2


class RosterView(roster.RosterView):
    """Written by the follower thread, read by the request handlers. Learner ids are the
    pseudonymous ids the roster topic holds."""

    def __init__(self) -> None:
        super().__init__()
        # tenant id -> learner id -> the school of the learner's stored record
        self._learner_schools: dict[str, dict[str, str]] = {}

    def apply(self, record: roster_pb2.RosterRecord) -> None:
        super().apply(record)
        if record.WhichOneof("entity") == "learner":
            with self._lock:
                schools = self._learner_schools.setdefault(record.tenant_id, {})
                schools[record.learner.sourced_id] = record.learner.school_id

    def remove(self, tenant_id: str, kind: str, entity_id: str) -> None:
        super().remove(tenant_id, kind, entity_id)
        if kind == "learner":
            with self._lock:
                self._learner_schools.get(tenant_id, {}).pop(entity_id, None)

    def learner_school(self, tenant_id: str, learner_id: str) -> str | None:
        """The school of the learner's stored record; None when the roster holds none."""
        with self._lock:
            return self._learner_schools.get(tenant_id, {}).get(learner_id)

    def class_schools(self, tenant_id: str, learner_id: str) -> list[str | None]:
        """The school of each class that enrols the learner (None: a class placed nowhere)."""
        return [self.school_of(tenant_id, c) for c in self.learner_classes(tenant_id, learner_id)]

    def learner_places(self, tenant_id: str, learner_id: str) -> list[str | None]:
        """Where the roster places the learner: their classes' schools and their stored
        record's school; empty for a learner the roster holds nothing of."""
        stored = self.learner_school(tenant_id, learner_id)
        return self.class_schools(tenant_id, learner_id) + ([] if stored is None else [stored])

    def schools_named(
        self, tenant_id: str, record: roster_pb2.RosterRecord, pseudonym: Callable[[str], str]
    ) -> set[str]:
        """The schools a roster record writes into: its own (an org is a school), and for a
        class or an enrollment the school the roster places the class in now, if known. What the
        record replaces counts too (else a school's token could take another school's learner
        over): for an enrollment the school of the class its stored version names, for a learner
        the school of their stored record (the record's SIS id through `pseudonym`)."""
        kind = record.WhichOneof("entity")
        if kind == "org":
            return {record.org.sourced_id}
        if kind == "learner":
            stored = self.learner_school(tenant_id, pseudonym(record.learner.sourced_id))
            return {record.learner.school_id} | ({stored} if stored is not None else set())
        if kind == "school_class":
            named, classes = record.school_class.school_id, [record.school_class.sourced_id]
        elif kind == "enrollment":
            named, classes = record.enrollment.school_id, [record.enrollment.class_id]
            replaced = self.enrollment_class(tenant_id, record.enrollment.sourced_id)
            classes += [] if replaced is None else [replaced]
        else:
            return {""}
        placed = {self.school_of(tenant_id, class_id) for class_id in classes}
        return {named} | {school for school in placed if school is not None}
