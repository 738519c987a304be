"""The recommender's local replica of the compacted catalog and roster topics: per tenant, the
catalog graph, and class membership (`roster`, the shared `trellis.common.roster.RosterView`).
Pure (no I/O): the catalog follower (`adapters.followers`) feeds it plain values, the roster
follower `trellis.common.roster.roster_applier`; gRPC handlers read snapshots. Locks keep reads
consistent with the follower threads.
"""

from __future__ import annotations

import threading
from typing import TypeVar

from trellis.common.roster import RosterView
from trellis.recommender.model import Catalog, Item, Resource, Skill

_EMPTY = Catalog.of([])
T = TypeVar("T")


class Replica:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._skills: dict[str, dict[str, Skill]] = {}
        self._items: dict[str, dict[str, Item]] = {}
        self._resources: dict[str, dict[str, Resource]] = {}
        self._snapshots: dict[str, Catalog] = {}
        self.roster = RosterView()

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
