"""Rows of one table as one block of ClickHouse's Native format, by clickhouse-connect's writer.

Split from the insert itself so that the bytes can be made in one process and inserted in another:
the sink's decoding process serializes, the process that owns chDB only inserts
(`trellis.reporting.sink_process`). No connection is needed: only the columns' wire types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.insert import InsertContext
from clickhouse_connect.driver.transform import NativeTransform

from trellis.reporting.rows import Row

__all__ = ["native_block"]


def native_block(
    table: str, rows: Sequence[Row], wire_types: Mapping[str, str]
) -> tuple[list[str], bytes]:
    """(column names, Native bytes) of `rows`, all of one row type, with the table's wire types."""
    columns = list(rows[0]._fields)
    unknown = set(columns) - set(wire_types)
    if unknown:
        raise ValueError(f"{table} has no columns {sorted(unknown)}")
    context = InsertContext(
        table,
        columns,
        [get_from_name(wire_types[column]) for column in columns],
        # Rows are tuples: one C-level transpose makes the columns the writer takes.
        list(zip(*rows, strict=True)),
        column_oriented=True,
    )
    block = b"".join(NativeTransform.build_insert(context))
    if context.insert_exception is not None:
        raise ValueError(f"rows of {table} cannot be serialized") from context.insert_exception
    # The writer starts its first chunk with the INSERT statement for an HTTP body: keep the data.
    return columns, block[block.index(b"\n") + 1 :]
