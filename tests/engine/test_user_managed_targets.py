"""Targets set up by the user (``setup_by_user=True``): switching to user-managed is
recorded so drop keeps the table, and rows of a retired source still leave it."""

from __future__ import annotations

from pathlib import Path

import cocod as cocoindex
from tests.conftest import SqlHelper, write


def _export_flow(source: str, user_managed: bool, second_source: str | None = None):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        out = scope.add_collector()
        sources = {"s1": source} | ({"s2": second_source} if second_source else {})
        for name, path in sources.items():
            scope[name] = fb.add_source(cocoindex.sources.LocalFile(path=path))
            with scope[name].row() as f:
                out.collect(filename=f["filename"], content=f["content"])
        out.export(
            "rows",
            cocoindex.targets.Postgres(table_name="managed_rows"),
            primary_key_fields=["filename"],
            setup_by_user=user_managed,
        )

    return define


def test_switching_to_user_managed_is_recorded_and_survives_drop(
    tmp_path: Path, sql: SqlHelper
) -> None:
    write(tmp_path / "a" / "x.md", "x")
    flow = cocoindex.open_flow("Flip", _export_flow(str(tmp_path / "a"), user_managed=False))
    flow.setup()
    flow.close()
    flow = cocoindex.open_flow("Flip", _export_flow(str(tmp_path / "a"), user_managed=True))
    flow.setup()
    flow.update()
    flow.drop()
    assert sql.fetchval("SELECT to_regclass('managed_rows')") is not None


def test_retired_source_rows_leave_user_managed_tables(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "a" / "one.md", "one")
    write(tmp_path / "b" / "two.md", "two")
    sql.execute("CREATE TABLE managed_rows (filename text PRIMARY KEY, content text)")
    define = _export_flow(str(tmp_path / "a"), True, second_source=str(tmp_path / "b"))
    flow = cocoindex.open_flow("Retire", define)
    flow.setup()
    flow.update()
    assert sql.fetchval("SELECT count(*) FROM managed_rows") == 2
    flow.close()
    flow = cocoindex.open_flow("Retire", _export_flow(str(tmp_path / "a"), True))
    flow.setup()
    assert [r[0] for r in sql.fetch("SELECT filename FROM managed_rows")] == ["one.md"]
