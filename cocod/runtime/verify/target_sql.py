"""Target-table SQL that ``verify`` needs: what the table looks like, and DDL to restore it.

These belong in :mod:`cocod.executors.postgres_target` (the target's only home for SQL);
they live here while another change to that module is in flight, and should move there
unchanged. They take a :class:`~cocod.executors.postgres_target.TargetTable` and the
table's setup state (``key_columns``/``value_columns`` as ``[name, sql type]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cocod.executors.postgres_target import TargetTable, plan_target_change, table_of
from cocod.flow.naming import quote_ident
from cocod.storage.pool import Connection

_TYPE_ALIASES = {
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
    "time": "time without time zone",
}


def normalize_sql_type(sql_type: str) -> str:
    """The spelling ``format_type()`` uses for a type cocod writes in DDL."""
    return _TYPE_ALIASES.get(sql_type, sql_type)


async def table_exists(conn: Connection, table: TargetTable) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table.qualified))


async def table_columns(conn: Connection, table: TargetTable) -> dict[str, str]:
    """Column name → its type as Postgres prints it (``vector(8)``, ``bigint``…)."""
    rows = await conn.fetch(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
        table.qualified,
    )
    return {r[0]: r[1] for r in rows}


async def table_indexes(conn: Connection, table: TargetTable) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = to_regclass($1)",
        table.qualified,
    )
    return {r[0] for r in rows}


def select_rows_sql(table: TargetTable, columns: Sequence[str]) -> str:
    return f"SELECT {', '.join(quote_ident(c) for c in columns)} FROM {table.qualified}"


def create_statements(state: dict[str, Any]) -> list[str]:
    """Idempotent DDL (``IF NOT EXISTS``) creating the table and its indexes as set up."""
    return list(plan_target_change(None, state).statements)


def recreate_column_statements(state: dict[str, Any], column: str, sql_type: str) -> list[str]:
    """Put a declared column back with its declared type; its values are rewritten after."""
    table = table_of(state)
    c = quote_ident(column)
    return [
        f"ALTER TABLE {table.qualified} DROP COLUMN IF EXISTS {c}",
        f"ALTER TABLE {table.qualified} ADD COLUMN {c} {sql_type}",
    ]


def delete_by_key_sql(table: TargetTable, key_columns: Sequence[str]) -> str:
    where = " AND ".join(f"{quote_ident(k)} = ${i + 1}" for i, k in enumerate(key_columns))
    return f"DELETE FROM {table.qualified} WHERE {where}"


def drop_table_statement(table: TargetTable) -> str:
    """Only for a table cocod created whose key columns were changed behind its back."""
    return f"DROP TABLE IF EXISTS {table.qualified}"
