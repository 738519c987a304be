"""Reporting store: the port (`base`), chDB embedded by default, a ClickHouse server by URL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trellis.common.settings import ClickHouseSettings
from trellis.reporting.store.base import (
    HeatmapCell,
    ReportingStore,
    SkillProgress,
    StoreError,
    StoreStatus,
)

if TYPE_CHECKING:
    from trellis.reporting.store.clickhouse import ClickHouseStore

__all__ = [
    "HeatmapCell",
    "ReportingStore",
    "SkillProgress",
    "StoreError",
    "StoreStatus",
    "create_store",
]


def create_store(settings: ClickHouseSettings) -> ClickHouseStore:
    """No `url`: embedded chDB at `chdb_path`; `url`: that ClickHouse server. Connects lazily."""
    if settings.url:
        from trellis.reporting.store.clickhouse import ClickHouseStore

        return ClickHouseStore(settings.url, settings.database)
    from trellis.reporting.store.chdb import ChdbStore

    return ChdbStore(settings.chdb_path, settings.database)
