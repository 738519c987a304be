"""The recommender's local replica of the compacted catalog and roster topics: per tenant, the
catalog graph, and class membership. Pure (no I/O): the followers in `adapters.followers` feed it
plain values; gRPC handlers read snapshots. A lock keeps reads consistent with the follower threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TypeVar

from trellis.recommender.model import Catalog, Item, Resource, Skill

_EMPTY = Catalog.of([])
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Enrollment:
    class_id: str
    user_id: str
    role: str  # "learner" or "teacher"


class Replica:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._skills: dict[str, dict[str, Skill]] = {}
        self._items: dict[str, dict[str, Item]] = {}
        self._resources: dict[str, dict[str, Resource]] = {}
        self._snapshots: dict[str, Catalog] = {}
        self._enrollments: dict[str, dict[str, Enrollment]] = {}
        self._class_schools: dict[str, dict[str, str]] = {}

    # --- catalog ---

    def put_skill(self, tenant_id: str, skill: Skill) -> None:
        self._put(self._skills, tenant_id, skill.skill_id, skill)

    def put_item(self, tenant_id: str, item: Item) -> None:
        self._put(self._items, tenant_id, item.item_id, item)

    def put_resource(self, tenant_id: str, resource: Resource) -> None:
        self._put(self._resources, tenant_id, resource.resource_id, resource)

    def remove_catalog(self, tenant_id: str, kind: str, entity_id: str) -> None:
        """A tombstone: the record of that key is gone."""
        with self._lock:
            if kind == "skill":
                self._skills.get(tenant_id, {}).pop(entity_id, None)
            elif kind == "item":
                self._items.get(tenant_id, {}).pop(entity_id, None)
            elif kind == "resource":
                self._resources.get(tenant_id, {}).pop(entity_id, None)
            self._snapshots.pop(tenant_id, None)

    def _put(self, table: dict[str, dict[str, T]], tenant_id: str, key: str, value: T) -> None:
        with self._lock:
            table.setdefault(tenant_id, {})[key] = value
            self._snapshots.pop(tenant_id, None)

    def catalog(self, tenant_id: str) -> Catalog:
        """An immutable snapshot of the tenant's catalog, rebuilt only after a change."""
        with self._lock:
            snapshot = self._snapshots.get(tenant_id)
            if snapshot is None:
                if tenant_id not in self._skills and tenant_id not in self._items:
                    return _EMPTY
                snapshot = Catalog.of(
                    self._skills.get(tenant_id, {}).values(),
                    self._items.get(tenant_id, {}).values(),
                    self._resources.get(tenant_id, {}).values(),
                )
                self._snapshots[tenant_id] = snapshot
            return snapshot

    # --- roster ---

    def put_enrollment(self, tenant_id: str, sourced_id: str, enrollment: Enrollment) -> None:
        with self._lock:
            self._enrollments.setdefault(tenant_id, {})[sourced_id] = enrollment

    def remove_enrollment(self, tenant_id: str, sourced_id: str) -> None:
        with self._lock:
            self._enrollments.get(tenant_id, {}).pop(sourced_id, None)

    def put_class(self, tenant_id: str, class_id: str, school_id: str) -> None:
        with self._lock:
            self._class_schools.setdefault(tenant_id, {})[class_id] = school_id

    def remove_class(self, tenant_id: str, class_id: str) -> None:
        with self._lock:
            self._class_schools.get(tenant_id, {}).pop(class_id, None)

    def class_learners(self, tenant_id: str, class_id: str) -> list[str]:
        """Pseudonymous ids of the learners enrolled in the class, sorted."""
        with self._lock:
            return sorted(
                {
                    e.user_id
                    for e in self._enrollments.get(tenant_id, {}).values()
                    if e.class_id == class_id and e.role == "learner"
                }
            )

    def learner_classes(self, tenant_id: str, learner_id: str) -> set[str]:
        with self._lock:
            return {
                e.class_id
                for e in self._enrollments.get(tenant_id, {}).values()
                if e.user_id == learner_id and e.role == "learner"
            }

    def class_school(self, tenant_id: str, class_id: str) -> str | None:
        with self._lock:
            return self._class_schools.get(tenant_id, {}).get(class_id)
