"""The Postgres target: desired table state (``table``), DDL to reach it (``ddl``), row
writes (``writer``), the vector indexes an initial load defers (``vector_indexes``) and
every other statement on target tables (``statements``).
"""

from __future__ import annotations

from cocod.executors.postgres.ddl import TargetChange, is_adopted, plan_target_change
from cocod.executors.postgres.statements import (
    delete_recorded_rows,
    existing_tables,
    row_count_estimates,
    similarity_search,
)
from cocod.executors.postgres.table import (
    Connection,
    TargetTable,
    default_table_name,
    desired_state,
    resolve_table,
    sql_type,
    table_of,
)
from cocod.executors.postgres.vector_indexes import (
    IndexDeferral,
    deferral_for,
    deferred_builds,
)
from cocod.executors.postgres.writer import TableWriter, storable_text, strip_nul

__all__ = [
    "Connection",
    "IndexDeferral",
    "TableWriter",
    "TargetChange",
    "TargetTable",
    "default_table_name",
    "deferral_for",
    "deferred_builds",
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
