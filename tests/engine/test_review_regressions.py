"""Regressions for defects found in review: each of these once hung, lost or leaked data."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import cocod as cocoindex
from cocod.errors import FlowDefinitionError, NamingError, SetupError
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow


@cocoindex.op.function(cache=True, behavior_version=1)
def lies_about_its_type(text: str) -> str:
    return text.encode()  # type: ignore[return-value]  # bytes where str is declared


def test_failing_memo_encode_does_not_hang_later_passes(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "docs" / "a.md", "x")

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["docs"] = fb.add_source(cocoindex.sources.LocalFile(path=str(tmp_path / "docs")))
        out = scope.add_collector()
        with scope["docs"].row() as doc:
            doc["y"] = doc["content"].transform(lies_about_its_type)
            out.collect(filename=doc["filename"], y=doc["y"])
        out.export("ys", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

    flow = cocoindex.open_flow("Lies", define)
    flow.setup()
    assert flow.update().stats["docs"]["num_errors"] == 1
    # The retry (and any other row with the same input) must fail again, not wait forever.
    started = time.monotonic()
    assert flow.update().stats["docs"]["num_errors"] == 1
    assert time.monotonic() - started < 60


def test_fifo_in_a_watched_folder_is_ignored(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "first")
    flow = cocoindex.open_flow("Fifo", paragraph_flow(str(docs)))
    flow.setup()
    with cocoindex.FlowLiveUpdater(flow):
        time.sleep(0.3)
        os.mkfifo(docs / "pipe.md")
        write(docs / "b.md", "after the pipe")
        deadline = time.monotonic() + 15
        while sql.fetchval("SELECT count(*) FROM fifo__paragraphs WHERE filename = 'b.md'") == 0:
            assert time.monotonic() < deadline, "a FIFO blocked the source"
            time.sleep(0.05)
    assert flow.update().stats["documents"]["num_errors"] == 0


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


def test_drop_and_setup_while_a_live_updater_runs(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "a")
    flow = cocoindex.open_flow("Redo", paragraph_flow(str(docs)))
    flow.setup()
    with cocoindex.FlowLiveUpdater(flow):
        time.sleep(0.3)
        flow.drop()
        flow.setup()
        write(docs / "b.md", "b after re-setup")
        deadline = time.monotonic() + 20
        while sql.fetchval("SELECT count(*) FROM redo__paragraphs WHERE filename='b.md'") != 1:
            assert time.monotonic() < deadline, "the updater did not follow the new setup"
            time.sleep(0.05)
    flow_ids = {r[0] for r in sql.fetch("SELECT DISTINCT flow_id FROM cocod.tracking")}
    current = sql.fetchval(
        "SELECT (state->>'flow_id')::int FROM cocod.setup_metadata WHERE resource = 'flow'"
    )
    assert flow_ids == {current}, "no tracking rows may be written under a dropped flow's id"


def test_two_owners_of_one_table_are_refused(tmp_path: Path, sql: SqlHelper) -> None:
    def two_exports(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["d"] = fb.add_source(cocoindex.sources.LocalFile(path=str(tmp_path)))
        a, b = scope.add_collector(), scope.add_collector()
        with scope["d"].row() as f:
            a.collect(filename=f["filename"])
            b.collect(filename=f["filename"])
        a.export(
            "a", cocoindex.targets.Postgres(table_name="shared"), primary_key_fields=["filename"]
        )
        b.export(
            "b", cocoindex.targets.Postgres(table_name="shared"), primary_key_fields=["filename"]
        )

    with pytest.raises(FlowDefinitionError, match="both write"):
        cocoindex.open_flow("Twice", two_exports).setup()
    first = cocoindex.open_flow("Owner", paragraph_flow(str(tmp_path), table_name="taken"))
    first.setup()
    second = cocoindex.open_flow("Thief", paragraph_flow(str(tmp_path), table_name="taken"))
    with pytest.raises(SetupError, match="already manages"):
        second.setup()


def test_hostile_internal_schema_name_is_rejected(database_url: str) -> None:
    with pytest.raises(NamingError):
        cocoindex.init(
            cocoindex.Settings(
                database=cocoindex.DatabaseConnectionSpec(url=database_url),
                db_schema_name="o'brien",
            )
        )
