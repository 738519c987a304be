"""A replica of the roster topic's class membership (`trellis.roster.v1`): the school of every
class, and which learners each class enrols. Pure data, no I/O.

Fed in topic order by a `CompactedTopicFollower` through `roster_applier` (tombstones, keys
`tenant/kind/id`, remove what they name); read by request handlers on other threads, hence the
lock. Learner ids are the pseudonymous ids the roster topic holds (ingest pseudonymizes
enrollments' `user_id` like activity's `learner_id`), so they join with activity keys as they
are. Only learners' enrollments are kept: staff scopes come from their tokens.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from trellis.common.codec import Headers, decode
from trellis.common.pb.events.v1 import roster_pb2

#: (key, value or None for a tombstone, headers), as `trellis.common.follower.Apply`.
RecordApply = Callable[[bytes | None, bytes | None, Headers], None]


class RosterView:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # tenant id -> class id -> school id
        self._schools: dict[str, dict[str, str]] = {}
        # tenant id -> enrollment id -> (class id, learner id), learners' enrollments only
        self._enrollments: dict[str, dict[str, tuple[str, str]]] = {}
        # tenant id -> (class id, learner id) -> how many enrollments say so
        self._enrolled: dict[str, Counter[tuple[str, str]]] = {}
        # tenant id -> class id -> learner ids; tenant id -> learner id -> class ids
        self._members: dict[str, dict[str, set[str]]] = {}
        self._classes_of: dict[str, dict[str, set[str]]] = {}

    def school_of(self, tenant_id: str, class_id: str) -> str | None:
        """The school the roster places the class in; None when the roster lacks the class."""
        with self._lock:
            return self._schools.get(tenant_id, {}).get(class_id)

    def enrolled(self, tenant_id: str, class_id: str, learner_id: str) -> bool:
        """Whether the roster enrols the learner in the class."""
        with self._lock:
            return class_id in self._classes_of.get(tenant_id, {}).get(learner_id, ())

    def class_learners(self, tenant_id: str, class_id: str) -> list[str]:
        """The learners the class enrols, sorted."""
        with self._lock:
            return sorted(self._members.get(tenant_id, {}).get(class_id, ()))

    def learner_classes(self, tenant_id: str, learner_id: str) -> list[str]:
        """The classes that enrol the learner, sorted."""
        with self._lock:
            return sorted(self._classes_of.get(tenant_id, {}).get(learner_id, ()))

    def enrollment_class(self, tenant_id: str, enrollment_id: str) -> str | None:
        """The class a learner's enrollment of that id names now; None when the roster holds no
        learner's enrollment of that id."""
        with self._lock:
            pair = self._enrollments.get(tenant_id, {}).get(enrollment_id)
            return None if pair is None else pair[0]

    def apply(self, record: roster_pb2.RosterRecord) -> None:
        kind = record.WhichOneof("entity")
        with self._lock:
            if kind == "school_class":
                tenant = self._schools.setdefault(record.tenant_id, {})
                tenant[record.school_class.sourced_id] = record.school_class.school_id
            elif kind == "enrollment":
                enrollment = record.enrollment
                # A new version of an enrollment replaces the old one (it may name another class).
                self._drop_enrollment(record.tenant_id, enrollment.sourced_id)
                if enrollment.role == "learner":
                    pair = (enrollment.class_id, enrollment.user_id)
                    self._enrollments.setdefault(record.tenant_id, {})[enrollment.sourced_id] = pair
                    self._count(record.tenant_id, pair, +1)

    def remove(self, tenant_id: str, kind: str, entity_id: str) -> None:
        """A tombstone of the roster topic: the record of that key is gone."""
        with self._lock:
            if kind == "school_class":
                self._schools.get(tenant_id, {}).pop(entity_id, None)
            elif kind == "enrollment":
                self._drop_enrollment(tenant_id, entity_id)

    def _drop_enrollment(self, tenant_id: str, enrollment_id: str) -> None:
        pair = self._enrollments.get(tenant_id, {}).pop(enrollment_id, None)
        if pair is not None:
            self._count(tenant_id, pair, -1)

    def _count(self, tenant_id: str, pair: tuple[str, str], step: int) -> None:
        """Two enrollments may enrol the same learner in the same class: membership ends with
        the last of them."""
        counts = self._enrolled.setdefault(tenant_id, Counter())
        counts[pair] += step
        class_id, learner_id = pair
        members = self._members.setdefault(tenant_id, {})
        classes_of = self._classes_of.setdefault(tenant_id, {})
        if counts[pair] > 0:
            members.setdefault(class_id, set()).add(learner_id)
            classes_of.setdefault(learner_id, set()).add(class_id)
            return
        del counts[pair]
        _discard(members, class_id, learner_id)
        _discard(classes_of, learner_id, class_id)


def _discard(index: dict[str, set[str]], key: str, value: str) -> None:
    values = index.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del index[key]


def roster_applier(view: RosterView) -> RecordApply:
    """Roster topic records into `view`; a tombstone removes the record its key names."""

    def apply(key: bytes | None, value: bytes | None, headers: Headers) -> None:
        if value is not None:
            view.apply(decode(roster_pb2.RosterRecord, value, headers))
            return
        parts = (key or b"").decode(errors="replace").split("/", 2)
        if len(parts) == 3:
            view.remove(*parts)

    return apply
