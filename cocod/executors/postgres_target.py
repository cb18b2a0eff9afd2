"""The Postgres target: desired table state, DDL to reach it, row writes, and every other
statement on target tables (similarity queries, row counts, existence checks), so the
runtime and the daemon hold no target SQL of their own.

Identifiers are always quoted; table names are folded to lower case first, so a table
created for ``Demo__chunks`` is ``demo__chunks`` and the unquoted SQL users wrote against v0
tables still works. Names over 63 bytes are rejected rather than silently truncated.

Text that Postgres cannot hold (the lone surrogates of a file name that is not UTF-8) is
written with those bytes escaped (``caf\\xe9.md``), the same way every time, so the row's
key still matches on update and delete.

A table that existed before setup is only used with ``adopt_existing=True``; its state then
records ``created_by_cocod: false`` and drop deletes the rows cocod wrote but keeps the table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from cocod.engine.interfaces import ExportWrite
from cocod.engine.plan import ExportPlan
from cocod.engine.values import to_json_value
from cocod.errors import FlowDefinitionError, NamingError, SetupError
from cocod.flow.index import HnswVectorIndexMethod, IvfFlatVectorIndexMethod
from cocod.flow.naming import (
    MAX_PG_IDENTIFIER_BYTES,
    quote_ident,
    sanitize_name,
    validate_sql_identifier,
)
from cocod.flow.types import ValueType, as_utc_if_naive
from cocod.ops.targets import Postgres

Connection = asyncpg.Connection | PoolConnectionProxy

_SCALAR_SQL = {
    "Bytes": "bytea",
    "Str": "text",
    "Bool": "boolean",
    "Int64": "bigint",
    "Float32": "real",
    "Float64": "double precision",
    "Range": "int8range",
    "Uuid": "uuid",
    "Date": "date",
    "Time": "time",
    "LocalDateTime": "timestamp",
    "OffsetDateTime": "timestamptz",
    "TimeDelta": "interval",
    "Json": "jsonb",
}
_OPCLASS = {
    "CosineSimilarity": "cosine",
    "L2Distance": "l2",
    "InnerProduct": "ip",
}


def sql_type(vtype: ValueType, column_type: str | None = None) -> str:
    if vtype.kind == "Vector":
        elem = vtype.element
        if (
            elem is not None
            and elem.kind in ("Float32", "Float64", "Int64")
            and vtype.dimension is not None
        ):
            return f"{column_type or 'vector'}({vtype.dimension})"
        return "jsonb"
    return _SCALAR_SQL.get(vtype.kind, "jsonb")


def default_table_name(full_flow_name: str, export_name: str) -> str:
    """v0's default (``Flow__export`` sanitised), folded to lower case."""
    return sanitize_name(f"{full_flow_name}__{export_name}").lower()


@dataclass(frozen=True)
class TargetTable:
    schema: str | None
    table: str

    @property
    def qualified(self) -> str:
        t = quote_ident(self.table)
        return f"{quote_ident(self.schema)}.{t}" if self.schema else t

    @property
    def setup_key(self) -> str:
        return f"{self.schema or ''}.{self.table}"

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


def resolve_table(full_flow_name: str, export: ExportPlan) -> TargetTable:
    spec = export.export.target
    assert isinstance(spec, Postgres)
    if spec.database is not None:
        raise FlowDefinitionError(
            f"export {export.name!r}: targets.Postgres(database=...) (another database) is not "
            "supported yet; the target lives in cocod's database"
        )
    if export.export.fts_indexes:
        raise FlowDefinitionError(
            f"export {export.name!r}: full-text indexes (fts_indexes) are not supported by the "
            "Postgres target; create them with SQL on the table instead"
        )
    if export.export.attachments:
        raise FlowDefinitionError(
            f"export {export.name!r}: attachments (PostgresSqlCommand) are not supported yet"
        )
    if spec.schema is not None and spec.table_name is None:
        raise FlowDefinitionError(
            f"export {export.name!r}: targets.Postgres(schema=...) needs an explicit table_name"
        )
    if spec.table_name is not None:
        table = validate_sql_identifier(spec.table_name, "table name").lower()
    else:
        table = default_table_name(full_flow_name, export.name)
        if len(table.encode()) > MAX_PG_IDENTIFIER_BYTES:
            raise NamingError(
                f"the default table name {table!r} of export {export.name!r} is over "
                f"{MAX_PG_IDENTIFIER_BYTES} bytes; set targets.Postgres(table_name=...)"
            )
    schema = validate_sql_identifier(spec.schema, "schema name").lower() if spec.schema else None
    return TargetTable(schema, table)


def desired_state(full_flow_name: str, export: ExportPlan) -> dict[str, Any]:
    """The persistent shape of one export's table, as stored in the setup record."""
    spec = export.export.target
    assert isinstance(spec, Postgres)
    table = resolve_table(full_flow_name, export)
    options = spec.column_options or {}
    columns: dict[str, str] = {}
    for name, vtype in zip(
        [*export.key_fields, *export.value_fields],
        [*export.key_types, *export.value_types],
        strict=True,
    ):
        validate_sql_identifier(name, "column name")
        option = options.get(name)
        columns[name] = sql_type(vtype, option.type if option else None)
    indexes = []
    for index in export.export.vector_indexes:
        column_sql = columns.get(index.field_name, "")
        if not (column_sql.startswith("vector(") or column_sql.startswith("halfvec(")):
            raise FlowDefinitionError(
                f"export {export.name!r}: vector index on {index.field_name!r} needs a vector "
                f"column with a known dimension (it is {column_sql or 'missing'})"
            )
        prefix = "halfvec_" if column_sql.startswith("halfvec(") else "vector_"
        opclass = f"{prefix}{_OPCLASS[index.metric.value]}_ops"
        method = index.method or HnswVectorIndexMethod()
        params: list[str] = []
        if isinstance(method, HnswVectorIndexMethod):
            using = "hnsw"
            if method.m is not None:
                params.append(f"m = {int(method.m)}")
            if method.ef_construction is not None:
                params.append(f"ef_construction = {int(method.ef_construction)}")
        elif isinstance(method, IvfFlatVectorIndexMethod):
            using = "ivfflat"
            if method.lists is not None:
                params.append(f"lists = {int(method.lists)}")
        suffix = f"__{using}" if index.method is not None else ""
        name = _index_name(f"{table.table}__{index.field_name}__{opclass}{suffix}")
        indexes.append(
            {
                "name": name,
                "column": index.field_name,
                "opclass": opclass,
                "using": using,
                "params": params,
            }
        )
    return {
        "kind": "Postgres",
        "schema": table.schema,
        "table": table.table,
        "key_columns": [[k, columns[k]] for k in export.key_fields],
        "value_columns": [[v, columns[v]] for v in export.value_fields],
        "vector_indexes": indexes,
        "setup_by_user": export.export.setup_by_user,
    }


def _index_name(name: str) -> str:
    """Keep index names under Postgres' limit deterministically instead of truncating."""
    if len(name.encode()) <= MAX_PG_IDENTIFIER_BYTES:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return name.encode()[: MAX_PG_IDENTIFIER_BYTES - 10].decode(errors="ignore") + "__" + digest


def table_of(state: dict[str, Any]) -> TargetTable:
    return TargetTable(state.get("schema"), state["table"])


# --- change planning ------------------------------------------------------------------------


@dataclass
class TargetChange:
    status: str  # READY, TO CREATE, TO UPDATE, TO DELETE, USER MANAGED
    actions: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    bumps_schema_version: bool = False


def is_adopted(state: dict[str, Any]) -> bool:
    """A table cocod did not create: drop leaves it (and deletes only cocod's rows)."""
    return not state.get("setup_by_user") and not state.get("created_by_cocod", True)


def plan_target_change(old: dict[str, Any] | None, new: dict[str, Any] | None) -> TargetChange:
    if new is not None and new.get("setup_by_user"):
        return TargetChange("USER MANAGED")
    if new is None:
        assert old is not None
        if old.get("setup_by_user"):
            return TargetChange("TO DELETE", ["Forget user-managed table (not dropped)"])
        table = table_of(old)
        if is_adopted(old):
            return TargetChange(
                "TO DELETE",
                [f"Delete the rows cocod wrote from adopted table {table.display} (kept)"],
            )
        return TargetChange(
            "TO DELETE",
            [f"Drop table {table.display}"],
            [f"DROP TABLE IF EXISTS {table.qualified}"],
        )
    if old is None or old.get("setup_by_user") or table_of(old) != table_of(new):
        change = _create(new)
        replaced = old is not None and table_of(old) != table_of(new)
        if replaced and old is not None and not old.get("setup_by_user") and not is_adopted(old):
            change.actions.insert(0, f"Drop table {table_of(old).display}")
            change.statements.insert(0, f"DROP TABLE IF EXISTS {table_of(old).qualified}")
        return change
    if old["key_columns"] != new["key_columns"] and is_adopted(old):
        raise SetupError(
            f"the primary key of {table_of(new).display} changed, but cocod did not create "
            "that table (it was adopted with adopt_existing=True), so it will not drop and "
            "re-create it; migrate the table yourself, or drop the flow and set it up again"
        )
    if old["key_columns"] != new["key_columns"]:
        change = _create(new)
        change.status = "TO UPDATE"
        change.bumps_schema_version = True
        table = table_of(new)
        change.actions.insert(0, "Primary key changed: drop and re-create the table")
        change.statements.insert(0, f"DROP TABLE IF EXISTS {table.qualified}")
        return change
    return _alter(old, new)


def _create(state: dict[str, Any]) -> TargetChange:
    table = table_of(state)
    keys, values = state["key_columns"], state["value_columns"]
    statements = []
    if table.schema:
        statements.append(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(table.schema)}")
    cols = [f"{quote_ident(n)} {t} NOT NULL" for n, t in keys] + [
        f"{quote_ident(n)} {t}" for n, t in values
    ]
    pk = ", ".join(quote_ident(n) for n, _ in keys)
    statements.append(
        f"CREATE TABLE IF NOT EXISTS {table.qualified} ({', '.join(cols)}, PRIMARY KEY ({pk}))"
    )
    actions = [f"Create table {table.display}: keys ({_cols(keys)}), values ({_cols(values)})"]
    for index in state["vector_indexes"]:
        statements.append(_create_index_sql(table, index))
        actions.append(f"Create {index['using']} index {index['name']} ({index['opclass']})")
    return TargetChange("TO CREATE", actions, statements)


def _cols(columns: Sequence[Sequence[str]]) -> str:
    return ", ".join(f"{n} {t}" for n, t in columns) or "none"


def _create_index_sql(table: TargetTable, index: dict[str, Any]) -> str:
    with_clause = f" WITH ({', '.join(index['params'])})" if index["params"] else ""
    return (
        f"CREATE INDEX IF NOT EXISTS {quote_ident(index['name'])} ON {table.qualified} "
        f"USING {index['using']} ({quote_ident(index['column'])} {index['opclass']})"
        f"{with_clause}"
    )


def _drop_index_sql(table: TargetTable, index: dict[str, Any]) -> str:
    qualified = (
        f"{quote_ident(table.schema)}.{quote_ident(index['name'])}"
        if table.schema
        else quote_ident(index["name"])
    )
    return f"DROP INDEX IF EXISTS {qualified}"


def _alter(old: dict[str, Any], new: dict[str, Any]) -> TargetChange:
    table = table_of(new)
    old_values = dict(map(tuple, old["value_columns"]))
    new_values = dict(map(tuple, new["value_columns"]))
    actions: list[str] = []
    statements: list[str] = []
    bumps = False
    retyped: set[str] = set()
    for name, old_type in old_values.items():
        if name not in new_values:
            actions.append(f"Drop column {name}")
            statements.append(
                f"ALTER TABLE {table.qualified} DROP COLUMN IF EXISTS {quote_ident(name)}"
            )
            bumps = True
        elif new_values[name] != old_type:
            retyped.add(name)
            actions.append(f"Change column {name} from {old_type} to {new_values[name]}")
            statements.append(
                f"ALTER TABLE {table.qualified} DROP COLUMN IF EXISTS {quote_ident(name)}"
            )
            statements.append(
                f"ALTER TABLE {table.qualified} ADD COLUMN {quote_ident(name)} {new_values[name]}"
            )
            bumps = True
    for name, new_type in new_values.items():
        if name not in old_values:
            actions.append(f"Add column {name} {new_type}")
            statements.append(
                f"ALTER TABLE {table.qualified} ADD COLUMN IF NOT EXISTS {quote_ident(name)} "
                f"{new_type}"
            )
    old_indexes = {i["name"]: i for i in old["vector_indexes"]}
    new_indexes = {i["name"]: i for i in new["vector_indexes"]}
    for name, index in old_indexes.items():
        if new_indexes.get(name) != index:
            actions.append(f"Drop index {name}")
            statements.append(_drop_index_sql(table, index))
    for name, index in new_indexes.items():
        # A retyped column lost its index with the column: re-create it (v0 did not).
        if old_indexes.get(name) != index or index["column"] in retyped:
            actions.append(f"Create {index['using']} index {name} ({index['opclass']})")
            statements.append(_create_index_sql(table, index))
    status = "TO UPDATE" if statements else "READY"
    return TargetChange(status, actions, statements, bumps)


# --- writes -------------------------------------------------------------------------------


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
        return lambda v: None if v is None else _strip_nul(to_json_value(v, vtype))
    if kind == "Str":
        return lambda v: storable_text(v) if isinstance(v, str) else v
    if kind == "Range":
        return lambda v: None if v is None else asyncpg.Range(int(v[0]), int(v[1]))
    if kind == "OffsetDateTime":
        return as_utc_if_naive
    return lambda v: v


def _strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    if isinstance(value, dict):
        return {k: _strip_nul(v) for k, v in value.items()}
    return value


# --- other statements on target tables ---------------------------------------------------


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
        [storable_text(p) if isinstance(p, str) else _strip_nul(p) for p in json.loads(k)]
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
