"""Every other statement on target tables: existence, recorded-row deletes, row counts,
similarity search, and what ``cocod verify`` reads and repairs (columns, indexes, DDL to
restore a table), so the runtime and the daemon hold no target SQL of their own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from cocod.executors.postgres.ddl import plan_target_change
from cocod.executors.postgres.table import Connection, TargetTable, table_of
from cocod.executors.postgres.writer import storable_text, strip_nul
from cocod.flow.naming import quote_ident


async def existing_tables(conn: Connection, states: Iterable[dict[str, Any]]) -> set[str]:
    """Which of these tables already exist (setup keys ``schema.table``)."""
    tables = {table_of(s).setup_key: table_of(s).qualified for s in states}
    if not tables:
        return set()
    rows = await conn.fetch(
        "SELECT k FROM unnest($1::text[], $2::text[]) AS t(k, q) WHERE to_regclass(q) IS NOT NULL",
        list(tables),
        list(tables.values()),
    )
    return {r["k"] for r in rows}


_KEY_FROM_JSON = {
    "bytea": "decode(j ->> {i}, 'base64')",
    "int8range": "int8range((j -> {i} ->> 0)::bigint, (j -> {i} ->> 1)::bigint)",
    "interval": "make_interval(secs => (j ->> {i})::float8)",
    "jsonb": "(j -> {i})",
    "text": "(j ->> {i})",
}


async def delete_recorded_rows(
    conn: Connection, state: dict[str, Any], key_texts: Iterable[str]
) -> int:
    """Delete rows by their recorded key texts (JSON arrays, see ``key_to_json_text``).

    Needs only the recorded state, not the flow's code, so it works for an export that is
    no longer defined (drop of an adopted table).
    """
    table = table_of(state)
    columns = state["key_columns"]
    keys = [
        [storable_text(p) if isinstance(p, str) else strip_nul(p) for p in json.loads(k)]
        for k in key_texts
    ]
    if not keys:
        return 0
    select = ", ".join(
        _KEY_FROM_JSON.get(sql, "(j ->> {i})::" + sql).format(i=i)
        for i, (_, sql) in enumerate(columns)
    )
    names = ", ".join(quote_ident(n) for n, _ in columns)
    status = await conn.execute(
        f"DELETE FROM {table.qualified} WHERE ({names}) IN "
        f"(SELECT {select} FROM jsonb_array_elements($1::jsonb) AS e(j))",
        keys,
    )
    return int(status.split()[-1])


async def row_count_estimates(
    conn: Connection, states: Iterable[dict[str, Any]], *, exact_below_bytes: int = 1 << 20
) -> dict[str, int | None]:
    """Rows per table (by display name) from statistics, without count(*) on big tables.

    ``pg_class.reltuples`` is kept current by autovacuum and ANALYZE. A table never
    analysed (-1) is counted exactly while it is small (under ``exact_below_bytes`` on
    disk), else estimated from the statistics collector's live-tuple count, so
    ``cocod status`` stays fast on tables of millions of rows. None: the table is missing.
    """
    tables = {table_of(s).display: table_of(s) for s in states}
    if not tables:
        return {}
    rows = await conn.fetch(
        "SELECT t.name, c.reltuples, pg_relation_size(c.oid) AS bytes, s.n_live_tup "
        "FROM unnest($1::text[], $2::text[]) AS t(name, q) "
        "LEFT JOIN pg_class c ON c.oid = to_regclass(t.q) "
        "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid",
        list(tables),
        [t.qualified for t in tables.values()],
    )
    counts: dict[str, int | None] = {}
    for r in rows:
        name, reltuples = r["name"], r["reltuples"]
        if reltuples is None:
            counts[name] = None
        elif reltuples >= 0:
            counts[name] = round(reltuples)
        elif r["bytes"] < exact_below_bytes:
            exact = await conn.fetchval(f"SELECT count(*) FROM {tables[name].qualified}")
            counts[name] = int(exact)
        else:
            counts[name] = int(r["n_live_tup"] or 0)
    return counts


async def similarity_search(
    conn: Connection,
    table: TargetTable,
    columns: Sequence[str],
    vector_column: str,
    operator: str,
    vector: Any,
    top_k: int,
) -> list[asyncpg.Record]:
    """The ``top_k`` rows nearest ``vector``, with their distance as ``_distance``."""
    select = ", ".join(quote_ident(c) for c in columns)
    column = quote_ident(vector_column)
    sql = (
        f"SELECT {select}, {column} {operator} $1 AS _distance FROM {table.qualified} "
        f"ORDER BY {column} {operator} $1 LIMIT $2"
    )
    return list(await conn.fetch(sql, vector, top_k))


# --- what verify reads and repairs ------------------------------------------------------

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
