"""Reporting use cases: scope, pseudonymize, page, and run the blocking store queries off the loop.

The servicer authorizes and translates; here a caller's scope becomes query filters, SIS learner
ids become pseudonymous ids, and page tokens are made and checked. Store calls block (chDB has no
async client), so they run in a thread pool executor.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from trellis.common.pseudonym import Pseudonymizer
from trellis.reporting.store.base import HeatmapCell, ReportingStore, SkillProgress

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "BadPageToken",
    "HeatmapPage",
    "LearnerProgress",
    "ReportingService",
    "Scope",
    "decode_page_token",
    "encode_page_token",
]

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 5_000
_T = TypeVar("_T")


class BadPageToken(ValueError):
    """A page token this service did not issue for this request."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Which rows of a tenant a caller may read: None means no limit on that axis."""

    classes: Sequence[str] | None = None
    schools: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class LearnerProgress:
    learner_id: str  # pseudonymous
    skills: list[SkillProgress]


@dataclass(frozen=True, slots=True)
class HeatmapPage:
    cells: list[HeatmapCell]
    next_page_token: str


def encode_page_token(class_id: str, after: tuple[str, str]) -> str:
    """An opaque cursor: the last (learner, skill) served, bound to its class."""
    raw = json.dumps({"c": class_id, "l": after[0], "s": after[1]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(class_id: str, token: str) -> tuple[str, str] | None:
    """The cursor of a token (None for the first page); BadPageToken if it is not ours."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursor = json.loads(raw)
        found_class, learner, skill = cursor["c"], cursor["l"], cursor["s"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise BadPageToken("page_token is not valid") from exc
    if not all(isinstance(v, str) for v in (found_class, learner, skill)):
        raise BadPageToken("page_token is not valid")
    if found_class != class_id:
        raise BadPageToken("page_token belongs to another class")
    return learner, skill


class ReportingService:
    def __init__(
        self, store: ReportingStore, pseudonymizer: Pseudonymizer, executor: Executor
    ) -> None:
        self._store = store
        self._pseudonymizer = pseudonymizer
        self._executor = executor

    async def _run(self, call: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def learner_progress(
        self, tenant_id: str, sis_learner_id: str, scope: Scope
    ) -> LearnerProgress:
        """Latest mastery per skill; raises UnknownTenantKey if the tenant has no pseudonym key."""
        learner_id = self._pseudonymizer.pseudonymize(tenant_id, sis_learner_id)
        skills = await self._run(
            lambda: self._store.learner_progress(
                tenant_id, learner_id, classes=scope.classes, schools=scope.schools
            )
        )
        return LearnerProgress(learner_id=learner_id, skills=skills)

    async def class_heatmap(
        self, tenant_id: str, class_id: str, page_size: int, page_token: str, scope: Scope
    ) -> HeatmapPage:
        after = decode_page_token(class_id, page_token)
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        # One row more than the page tells whether another page follows.
        cells = await self._run(
            lambda: self._store.class_heatmap(
                tenant_id, class_id, size + 1, after, schools=scope.schools
            )
        )
        if len(cells) <= size:
            return HeatmapPage(cells=cells, next_page_token="")
        cells = cells[:size]
        last = cells[-1]
        return HeatmapPage(
            cells=cells,
            next_page_token=encode_page_token(class_id, (last.learner_id, last.skill_id)),
        )

    async def store_stats(self, tenant_id: str) -> dict[str, int]:
        return await self._run(lambda: self._store.row_counts(tenant_id))
