"""What ingest knows of each tenant's catalog, and the checks it backs: pure data and functions.

The view is filled from the compacted catalog topic by `adapters.follower`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from trellis.common.pb.events.v1 import catalog_pb2


@dataclass
class TenantCatalog:
    # skill id -> its prerequisite skill ids
    prerequisites: dict[str, tuple[str, ...]] = field(default_factory=dict)
    items: set[str] = field(default_factory=set)
    resources: set[str] = field(default_factory=set)


@dataclass
class CatalogView:
    """Written by the follower thread, read by the request handlers: the lock keeps reads whole."""

    tenants: dict[str, TenantCatalog] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def tenant(self, tenant_id: str) -> TenantCatalog:
        return self.tenants.setdefault(tenant_id, TenantCatalog())

    def prerequisites(self, tenant_id: str) -> dict[str, tuple[str, ...]]:
        with self._lock:
            return dict(self.tenant(tenant_id).prerequisites)

    def unknown(
        self, tenant_id: str, items: Iterable[str], skills: Iterable[str], resources: Iterable[str]
    ) -> tuple[list[str], list[str], list[str]]:
        """Those of the given item, skill and resource ids that the tenant's catalog lacks."""
        with self._lock:
            tenant = self.tenants.get(tenant_id) or TenantCatalog()
            return (
                [i for i in items if i not in tenant.items],
                [s for s in skills if s not in tenant.prerequisites],
                [r for r in resources if r not in tenant.resources],
            )

    def apply(self, record: catalog_pb2.CatalogRecord) -> None:
        with self._lock:
            self._apply(record)

    def _apply(self, record: catalog_pb2.CatalogRecord) -> None:
        tenant = self.tenant(record.tenant_id)
        kind = record.WhichOneof("entity")
        if kind == "skill":
            tenant.prerequisites[record.skill.skill_id] = tuple(record.skill.prerequisite_ids)
        elif kind == "item":
            tenant.items.add(record.item.item_id)
        elif kind == "resource":
            tenant.resources.add(record.resource.resource_id)


def find_cycle(prerequisites: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A prerequisite cycle as a path that ends where it starts (a -> b -> a), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(skill: str) -> list[str] | None:
        state[skill] = 1
        path.append(skill)
        for prerequisite in prerequisites.get(skill, ()):
            if state.get(prerequisite) == 1:
                return [*path[path.index(prerequisite) :], prerequisite]
            if prerequisite not in state and (cycle := visit(prerequisite)):
                return cycle
        path.pop()
        state[skill] = 2
        return None

    for skill in sorted(prerequisites):
        if skill not in state and (cycle := visit(skill)):
            return cycle
    return None


def cycle_with(
    known: Mapping[str, tuple[str, ...]], skills: Iterable[catalog_pb2.Skill]
) -> list[str] | None:
    """The cycle that the known graph would have with these skills upserted, if any."""
    graph = dict(known)
    for skill in skills:
        graph[skill.skill_id] = tuple(skill.prerequisite_ids)
    return find_cycle(graph)
