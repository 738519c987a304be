"""The reporting store embedded in this process with chDB, through clickhouse-connect's chdb DSN.

chDB is one process's store (DESIGN.md §7): a process hosts one engine path, and a second process
cannot open a path that another one holds. In embedded mode the reporting process owns the store;
its sink and its queries share it, every other reader goes through the reporting gRPC API.
Within the process any number of clients may share the engine: each thread gets its own.
"""

from __future__ import annotations

from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from trellis.reporting.store.clickhouse import ClickHouseStore, load_optional_modules

__all__ = ["ChdbStore"]


class ChdbStore(ClickHouseStore):
    """chDB at a directory path (created on first use)."""

    def __init__(self, path: Path, database: str) -> None:
        resolved = path.expanduser().resolve()
        if any(char in str(resolved) for char in "?#"):
            raise ValueError(f"chDB path {resolved} must not contain '?' or '#'")
        # `chdb:///abs/path`: an empty host, and the whole path is the engine location.
        super().__init__(url=f"chdb://{resolved.as_posix()}", database=database)
        self.path = resolved

    def _connect(self) -> Client:
        self.path.mkdir(parents=True, exist_ok=True)
        load_optional_modules()
        return clickhouse_connect.get_client(dsn=self._url)
