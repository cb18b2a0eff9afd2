"""Row writes: prepared upsert/delete statements and per-column value conversion.

Text that Postgres cannot hold (the lone surrogates of a file name that is not UTF-8) is
written with those bytes escaped (``caf\\xe9.md``), the same way every time, so the row's
key still matches on update and delete. A naive datetime in a ``timestamptz`` column is UTC.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from cocod.engine.interfaces import ExportWrite
from cocod.engine.plan import ExportPlan
from cocod.engine.values import to_json_value
from cocod.executors.postgres.table import table_of
from cocod.flow.naming import quote_ident
from cocod.flow.types import ValueType, as_utc_if_naive


class TableWriter:
    """Prepared upsert/delete statements for one table, and value conversion per column."""

    def __init__(self, state: dict[str, Any], export: ExportPlan) -> None:
        table = table_of(state)
        self.keys = [n for n, _ in state["key_columns"]]
        self.values = [n for n, _ in state["value_columns"]]
        types = dict(
            zip(
                [*export.key_fields, *export.value_fields],
                [*export.key_types, *export.value_types],
                strict=True,
            )
        )
        sql_types = dict(map(tuple, state["key_columns"] + state["value_columns"]))
        self.columns = self.keys + self.values
        self._converters = [_converter(types[c], sql_types[c]) for c in self.columns]
        self._key_converters = self._converters[: len(self.keys)]
        cols = ", ".join(quote_ident(c) for c in self.columns)
        params = ", ".join(f"${i + 1}" for i in range(len(self.columns)))
        conflict = ", ".join(quote_ident(k) for k in self.keys)
        if self.values:
            updates = ", ".join(
                f"{quote_ident(v)} = EXCLUDED.{quote_ident(v)}" for v in self.values
            )
            on_conflict = f"DO UPDATE SET {updates}"
        else:
            on_conflict = "DO NOTHING"
        self.upsert_sql = (
            f"INSERT INTO {table.qualified} ({cols}) VALUES ({params}) "
            f"ON CONFLICT ({conflict}) {on_conflict}"
        )
        where = " AND ".join(f"{quote_ident(k)} = ${i + 1}" for i, k in enumerate(self.keys))
        self.delete_sql = f"DELETE FROM {table.qualified} WHERE {where}"

    async def write(
        self, conn: asyncpg.Connection | PoolConnectionProxy, write: ExportWrite
    ) -> None:
        if write.deletes:
            await conn.executemany(
                self.delete_sql,
                [
                    [conv(v) for conv, v in zip(self._key_converters, key, strict=True)]
                    for key in write.deletes
                ],
            )
        if write.upserts:
            convs = self._converters
            columns = self.columns
            await conn.executemany(
                self.upsert_sql,
                [
                    [conv(row.get(c)) for conv, c in zip(convs, columns, strict=True)]
                    for row in write.upserts
                ],
            )


def storable_text(value: str) -> str:
    """Text as Postgres can hold it: no NUL, and lone surrogates as escaped bytes."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        raw = value.encode("utf-8", "surrogateescape")  # a file name's own bytes
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _converter(vtype: ValueType, column_sql: str) -> Any:
    kind = vtype.kind
    if column_sql == "jsonb":
        return lambda v: None if v is None else strip_nul(to_json_value(v, vtype))
    if kind == "Str":
        return lambda v: storable_text(v) if isinstance(v, str) else v
    if kind == "Range":
        return lambda v: None if v is None else asyncpg.Range(int(v[0]), int(v[1]))
    if kind == "OffsetDateTime":
        return as_utc_if_naive
    return lambda v: v


def strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, list):
        return [strip_nul(v) for v in value]
    if isinstance(value, dict):
        return {k: strip_nul(v) for k, v in value.items()}
    return value
