"""The Postgres target by its original path; the code is in :mod:`cocod.executors.postgres`."""

from __future__ import annotations

from cocod.executors.postgres import (
    Connection,
    TableWriter,
    TargetChange,
    TargetTable,
    default_table_name,
    delete_recorded_rows,
    desired_state,
    existing_tables,
    is_adopted,
    plan_target_change,
    resolve_table,
    row_count_estimates,
    similarity_search,
    sql_type,
    storable_text,
    strip_nul,
    table_of,
)

__all__ = [
    "Connection",
    "TableWriter",
    "TargetChange",
    "TargetTable",
    "default_table_name",
    "delete_recorded_rows",
    "desired_state",
    "existing_tables",
    "is_adopted",
    "plan_target_change",
    "resolve_table",
    "row_count_estimates",
    "similarity_search",
    "sql_type",
    "storable_text",
    "strip_nul",
    "table_of",
]
