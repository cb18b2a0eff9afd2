"""Target-table SQL that ``verify`` needs, by the path verify imports it from.

It lives with the rest of the target's SQL in :mod:`cocod.executors.postgres.statements`.
"""

from __future__ import annotations

from cocod.executors.postgres.statements import (
    create_statements,
    delete_by_key_sql,
    drop_table_statement,
    normalize_sql_type,
    recreate_column_statements,
    select_rows_sql,
    table_columns,
    table_exists,
    table_indexes,
)

__all__ = [
    "create_statements",
    "delete_by_key_sql",
    "drop_table_statement",
    "normalize_sql_type",
    "recreate_column_statements",
    "select_rows_sql",
    "table_columns",
    "table_exists",
    "table_indexes",
]
