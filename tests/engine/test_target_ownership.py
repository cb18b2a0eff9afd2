"""Targets cocod did not create are never adopted silently nor dropped; planning setup
changes nothing; status row counts come from statistics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

import cocod as cocoindex
from cocod.engine.indexer import UpdateMode
from cocod.engine.setup import FlowRecord, apply_export_versions, plan_setup
from cocod.errors import FlowDefinitionError, SetupError
from cocod.executors.postgres import row_count_estimates
from cocod.runtime.execution import POSTGRES_DRIVER, FlowExecution
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow, tiny_embed


def _files_flow(path: str, table: str, **target: object):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["docs"] = fb.add_source(cocoindex.sources.LocalFile(path=path))
        out = scope.add_collector()
        with scope["docs"].row() as doc:
            out.collect(filename=doc["filename"], content=doc["content"])
        out.export(
            "files",
            cocoindex.targets.Postgres(table_name=table, **target),  # type: ignore[arg-type]
            primary_key_fields=["filename"],
        )

    return define


def test_a_pre_existing_table_is_refused_then_adopted_and_kept_by_drop(
    tmp_path: Path, sql: SqlHelper
) -> None:
    write(tmp_path / "docs" / "a.md", "from cocod")
    sql.execute("CREATE TABLE theirs (filename text PRIMARY KEY, content text)")
    sql.execute("INSERT INTO theirs VALUES ('user.md', 'written by the user')")
    refused = cocoindex.open_flow("Refused", _files_flow(str(tmp_path / "docs"), "theirs"))
    with pytest.raises(SetupError, match=r"theirs already exists.*adopt_existing=True"):
        refused.setup()
    refused.close()
    assert sql.fetchval("SELECT to_regclass('cocod.setup_metadata')") is None  # nothing done

    flow = cocoindex.open_flow(
        "Adopter", _files_flow(str(tmp_path / "docs"), "theirs", adopt_existing=True)
    )
    flow.setup()
    state = sql.fetchval("SELECT state FROM cocod.setup_metadata WHERE resource LIKE 'target:%'")
    assert '"created_by_cocod": false' in str(state)
    flow.update()
    assert dict(sql.fetch("SELECT filename, content FROM theirs")) == {
        "user.md": "written by the user",
        "a.md": "from cocod",
    }
    flow.drop()
    assert sql.fetchval("SELECT to_regclass('theirs')") is not None
    assert dict(sql.fetch("SELECT filename, content FROM theirs")) == {
        "user.md": "written by the user"
    }


def test_a_table_cocod_created_is_dropped(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "docs" / "a.md", "x")
    flow = cocoindex.open_flow("Owned", _files_flow(str(tmp_path / "docs"), "owned"))
    flow.setup()
    flow.update()
    flow.close()
    # Set up again from a fresh process: the table it created is not "pre-existing".
    flow = cocoindex.open_flow("Owned", _files_flow(str(tmp_path / "docs"), "owned"))
    flow.setup()
    flow.drop()
    assert sql.fetchval("SELECT to_regclass('owned')") is None


def test_planning_setup_leaves_the_flow_plan_alone(tmp_path: Path) -> None:
    execution = FlowExecution("Pure", "Pure", _files_flow(str(tmp_path), "pure"))
    plan = execution.plan
    first = plan_setup(plan, None, POSTGRES_DRIVER, needs_internal_schema=False)
    apply_export_versions(plan, first)
    (item,) = first.targets
    assert item.new is not None
    # The recorded table had another primary key: setup will bump the schema version.
    old_state = dict(item.new, key_columns=[["filename", "text"], ["n", "bigint"]])
    record = FlowRecord(1, first.sources, first.next_source_id, {item.key: old_state})
    export = plan.exports["files"]
    before = (export.schema_version, export.target_signature, plan.sources["docs"].logic_fp)
    second = plan_setup(plan, record, POSTGRES_DRIVER, needs_internal_schema=False)
    assert second.targets[0].schema_version == 2
    assert (export.schema_version, export.target_signature, plan.sources["docs"].logic_fp) == (
        before
    )
    apply_export_versions(plan, second)
    assert export.schema_version == 2
    assert plan.sources["docs"].logic_fp != before[2]


def test_update_mode_from_flags() -> None:
    assert UpdateMode.from_flags() is UpdateMode.NORMAL
    assert UpdateMode.from_flags(reexport=True) is UpdateMode.REEXPORT
    assert UpdateMode.from_flags(full_reprocess=True, reexport=True) is UpdateMode.FULL_REPROCESS


def test_row_count_estimates_without_counting_big_tables(database_url: str) -> None:
    async def run() -> dict[str, int | None]:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("CREATE TABLE small (id int)")
            await conn.execute("INSERT INTO small SELECT generate_series(1, 10)")
            await conn.execute("CREATE TABLE analysed (id int)")
            await conn.execute("INSERT INTO analysed SELECT generate_series(1, 3000)")
            await conn.execute("ANALYZE analysed")
            await conn.execute("DELETE FROM analysed WHERE id <= 1000")  # not yet analysed
            return await row_count_estimates(
                conn,
                [
                    {"schema": None, "table": "small"},
                    {"schema": None, "table": "analysed"},
                    {"schema": None, "table": "missing"},
                ],
            )
        finally:
            await conn.close()

    counts = asyncio.run(run())
    # Never analysed and small: counted; analysed: the statistics (3000, not 2000).
    assert counts == {"small": 10, "analysed": 3000, "missing": None}


def test_an_adopted_table_that_does_not_fit_fails_setup_and_rolls_back(
    tmp_path: Path, sql: SqlHelper
) -> None:
    sql.execute("CREATE TABLE misfit (filename text PRIMARY KEY, content text)")

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["docs"] = fb.add_source(cocoindex.sources.LocalFile(path=str(tmp_path)))
        out = scope.add_collector()
        with scope["docs"].row() as doc:
            doc["embedding"] = doc["content"].transform(tiny_embed)
            out.collect(filename=doc["filename"], embedding=doc["embedding"])
        out.export(
            "files",
            cocoindex.targets.Postgres(table_name="misfit", adopt_existing=True),
            primary_key_fields=["filename"],
            vector_indexes=[
                cocoindex.VectorIndexDef(
                    "embedding", cocoindex.VectorSimilarityMetric.COSINE_SIMILARITY
                )
            ],
        )

    flow = cocoindex.open_flow("Misfit", define)
    with pytest.raises(SetupError, match="rolled back"):
        flow.setup()
    assert sql.fetchval("SELECT count(*) FROM cocod.setup_metadata") == 0


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
