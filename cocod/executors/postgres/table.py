"""Target tables: their names, column types and desired state (what setup records).

Identifiers are always quoted; table names are folded to lower case first, so a table
created for ``Demo__chunks`` is ``demo__chunks`` and the unquoted SQL users wrote against v0
tables still works. Names over 63 bytes are rejected rather than silently truncated. Column
types follow v0's mapping (docs/types.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from cocod.engine.plan import ExportPlan
from cocod.errors import FlowDefinitionError, NamingError
from cocod.flow.index import HnswVectorIndexMethod, IvfFlatVectorIndexMethod
from cocod.flow.naming import (
    MAX_PG_IDENTIFIER_BYTES,
    quote_ident,
    sanitize_name,
    validate_sql_identifier,
)
from cocod.flow.types import ValueType
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
