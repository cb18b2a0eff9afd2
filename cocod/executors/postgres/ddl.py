"""DDL planning: from the recorded table state to the desired one (create, alter, drop).

A table that existed before setup is only used with ``adopt_existing=True``; its state then
records ``created_by_cocod: false`` and drop deletes the rows cocod wrote but keeps the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cocod.errors import SetupError
from cocod.executors.postgres.table import TargetTable, table_of
from cocod.flow.naming import quote_ident


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
        statements.append(create_index_sql(table, index))
        actions.append(f"Create {index['using']} index {index['name']} ({index['opclass']})")
    return TargetChange("TO CREATE", actions, statements)


def _cols(columns: Sequence[Sequence[str]]) -> str:
    return ", ".join(f"{n} {t}" for n, t in columns) or "none"


def create_index_sql(table: TargetTable, index: dict[str, Any]) -> str:
    """``CREATE INDEX IF NOT EXISTS``: setup, verify and a deferred build all run it, and
    whichever comes second finds the index there (see :mod:`.vector_indexes`)."""
    with_clause = f" WITH ({', '.join(index['params'])})" if index["params"] else ""
    return (
        f"CREATE INDEX IF NOT EXISTS {quote_ident(index['name'])} ON {table.qualified} "
        f"USING {index['using']} ({quote_ident(index['column'])} {index['opclass']})"
        f"{with_clause}"
    )


def drop_index_sql(table: TargetTable, index: dict[str, Any]) -> str:
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
            statements.append(drop_index_sql(table, index))
    for name, index in new_indexes.items():
        # A retyped column lost its index with the column: re-create it (v0 did not).
        if old_indexes.get(name) != index or index["column"] in retyped:
            actions.append(f"Create {index['using']} index {name} ({index['opclass']})")
            statements.append(create_index_sql(table, index))
    status = "TO UPDATE" if statements else "READY"
    return TargetChange(status, actions, statements, bumps)
