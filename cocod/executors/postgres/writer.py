"""Row writes: one batched upsert and delete per table, and per-column value conversion.

Text that Postgres cannot hold (the lone surrogates of a file name that is not UTF-8) is
written with those bytes escaped (``caf\\xe9.md``), the same way every time, so the row's
key still matches on update and delete. A naive datetime in a ``timestamptz`` column is UTC.
"""

from __future__ import annotations

import json
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
    """One upsert and one delete statement per table, each taking a whole batch.

    Rows travel as one array parameter per column and come back as rows through
    ``unnest``: a batch of any size is one round trip and one statement execution, where
    ``executemany`` runs the statement once per row. Array elements must not be Python
    sequences (asyncpg would read a list as a nested array), so jsonb values are sent as
    JSON text and cast, and vectors as pgvector objects.
    """

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
        sql_types: dict[str, str] = dict(map(tuple, state["key_columns"] + state["value_columns"]))
        self.columns = self.keys + self.values
        self._converters = [_converter(types[c], sql_types[c]) for c in self.columns]
        self._key_converters = self._converters[: len(self.keys)]
        n_keys = len(self.keys)
        cols = ", ".join(quote_ident(c) for c in self.columns)
        conflict = ", ".join(quote_ident(k) for k in self.keys)
        if self.values:
            updates = ", ".join(
                f"{quote_ident(v)} = EXCLUDED.{quote_ident(v)}" for v in self.values
            )
            on_conflict = f"DO UPDATE SET {updates}"
        else:
            on_conflict = "DO NOTHING"
        self.upsert_sql = (
            f"INSERT INTO {table.qualified} ({cols}) "
            f"{_unnest_select([sql_types[c] for c in self.columns])} "
            f"ON CONFLICT ({conflict}) {on_conflict}"
        )
        self.delete_sql = (
            f"DELETE FROM {table.qualified} WHERE ({conflict}) IN "
            f"({_unnest_select([sql_types[c] for c in self.keys])})"
        )
        self._n_keys = n_keys

    async def write(
        self, conn: asyncpg.Connection | PoolConnectionProxy, write: ExportWrite
    ) -> None:
        if write.deletes:
            key_convs = self._key_converters
            keys = [
                [conv(v) for conv, v in zip(key_convs, key, strict=True)] for key in write.deletes
            ]
            await conn.execute(self.delete_sql, *_columns_of(_last_per_key(keys, self._n_keys)))
        if write.upserts:
            convs = self._converters
            columns = self.columns
            rows = [
                [conv(row.get(c)) for conv, c in zip(convs, columns, strict=True)]
                for row in write.upserts
            ]
            # ON CONFLICT cannot update one row twice in a statement: the last write wins,
            # as it did when each row was its own statement.
            await conn.execute(self.upsert_sql, *_columns_of(_last_per_key(rows, self._n_keys)))


def _array_type(column_sql: str) -> str:
    """The array parameter type carrying a column: ``vector(8)`` → ``vector[]`` (the
    column's typmod checks the dimension on insert); jsonb travels as ``text[]``."""
    if column_sql == "jsonb":
        return "text[]"
    return column_sql.split("(", 1)[0] + "[]"


def _unnest_select(column_sqls: list[str]) -> str:
    """``SELECT c0, c1::jsonb, … FROM unnest($1::t0[], …) AS u(c0, …)``: rows from arrays."""
    arrays = ", ".join(f"${i + 1}::{_array_type(t)}" for i, t in enumerate(column_sqls))
    names = ", ".join(f"c{i}" for i in range(len(column_sqls)))
    select = ", ".join(
        f"c{i}::jsonb" if t == "jsonb" else f"c{i}" for i, t in enumerate(column_sqls)
    )
    return f"SELECT {select} FROM unnest({arrays}) AS u({names})"


def _last_per_key(rows: list[list[Any]], n_keys: int) -> list[list[Any]]:
    """The rows with only the last one of each key (rarely more than one: a no-op)."""
    seen: dict[Any, int] = {}
    for i, row in enumerate(rows):
        key = tuple(row[:n_keys])
        try:
            seen[key] = i
        except TypeError:  # an unhashable key value: compare by its printed form
            seen[repr(key)] = i
    if len(seen) == len(rows):
        return rows
    return [rows[i] for i in sorted(seen.values())]


def _columns_of(rows: list[list[Any]]) -> list[list[Any]]:
    """Rows → one list per column, the arrays ``unnest`` turns back into rows."""
    return [list(col) for col in zip(*rows, strict=True)]


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
    """The value as its column's array element: JSON text for jsonb, a pgvector object for
    a vector (never a list, which an array parameter would read as a nested array)."""
    kind = vtype.kind
    if column_sql == "jsonb":
        return lambda v: None if v is None else _json_text(strip_nul(to_json_value(v, vtype)))
    if column_sql.startswith(("vector(", "halfvec(")):
        from pgvector import HalfVector, Vector  # numpy: only for tables with vectors

        cls = Vector if column_sql.startswith("vector(") else HalfVector
        return lambda v: v if v is None or isinstance(v, cls) else cls(v)
    if kind == "Str":
        return lambda v: storable_text(v) if isinstance(v, str) else v
    if kind == "Range":
        return lambda v: None if v is None else asyncpg.Range(int(v[0]), int(v[1]))
    if kind == "OffsetDateTime":
        return as_utc_if_naive
    return lambda v: v


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, list):
        return [strip_nul(v) for v in value]
    if isinstance(value, dict):
        return {k: strip_nul(v) for k, v in value.items()}
    return value
