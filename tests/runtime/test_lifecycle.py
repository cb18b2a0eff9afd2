"""Setup/drop/update lifecycle: the places where v0 misbehaved and cocod must not."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest

import cocod as cocoindex
from cocod.errors import SetupOutOfDateError
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow, split_paragraphs, tiny_vector


def _docs(tmp_path: Path) -> Path:
    write(tmp_path / "docs" / "a.md", "alpha one\n\nalpha two")
    write(tmp_path / "docs" / "b.md", "beta")
    return tmp_path / "docs"


def test_drop_then_setup_then_update_repopulates(tmp_path: Path, sql: SqlHelper) -> None:
    flow = cocoindex.open_flow("Life", paragraph_flow(str(_docs(tmp_path))))
    flow.setup()
    flow.update()
    assert sql.fetchval("SELECT count(*) FROM life__paragraphs") == 3

    flow.drop()
    with pytest.raises(SetupOutOfDateError, match="not up to date"):
        flow.update()
    flow.setup()
    info = flow.update()
    assert info.stats["documents"]["num_insertions"] == 2
    assert sql.fetchval("SELECT count(*) FROM life__paragraphs") == 3


def test_setup_is_idempotent(
    tmp_path: Path, sql: SqlHelper, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = cocoindex.open_flow("Twice", paragraph_flow(str(_docs(tmp_path))))
    flow.setup(report_to_stdout=True)
    first = capsys.readouterr().out
    assert "TO CREATE" in first
    flow.setup(report_to_stdout=True)
    second = capsys.readouterr().out
    assert "No setup changes to apply." in second
    assert "TO CREATE" not in second and "TO UPDATE" not in second


def test_update_before_setup_is_refused(tmp_path: Path, sql: SqlHelper) -> None:
    flow = cocoindex.open_flow("NoSetup", paragraph_flow(str(_docs(tmp_path))))
    with pytest.raises(SetupOutOfDateError, match="cocod setup"):
        flow.update()


def _two_exports(source: str, with_second: bool):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["documents"] = fb.add_source(cocoindex.sources.LocalFile(path=source))
        files = scope.add_collector()
        names = scope.add_collector()
        with scope["documents"].row() as doc:
            files.collect(filename=doc["filename"], content=doc["content"])
            names.collect(filename=doc["filename"])
        files.export("files", cocoindex.targets.Postgres(), primary_key_fields=["filename"])
        if with_second:
            names.export("names", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

    return define


def test_removing_an_export_drops_its_table(tmp_path: Path, sql: SqlHelper) -> None:
    source = str(_docs(tmp_path))
    flow = cocoindex.open_flow("Exports", _two_exports(source, with_second=True))
    flow.setup()
    flow.update()
    assert sql.fetchval("SELECT count(*) FROM exports__names") == 2
    flow.close()

    flow = cocoindex.open_flow("Exports", _two_exports(source, with_second=False))
    with pytest.raises(SetupOutOfDateError):
        flow.update()
    flow.setup()
    assert sql.fetchval("SELECT to_regclass('exports__names')") is None
    assert sql.fetchval("SELECT count(*) FROM exports__files") == 2
    info = flow.update()
    assert info.stats["documents"]["num_reprocesses"] == 2


@cocoindex.op.function(cache=True, behavior_version=1)
def tiny_embed_f64(text: str) -> cocoindex.Vector[np.float64, Literal[8]]:
    return tiny_vector(text).astype(np.float64)


def _vector_flow(source: str, halfvec: bool):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["documents"] = fb.add_source(cocoindex.sources.LocalFile(path=source))
        out = scope.add_collector()
        with scope["documents"].row() as doc:
            doc["vec"] = doc["content"].transform(tiny_embed_f64)
            out.collect(filename=doc["filename"], vec=doc["vec"])
        options = (
            {"vec": cocoindex.targets.PostgresColumnOptions(type="halfvec")} if halfvec else None
        )
        out.export(
            "vectors",
            cocoindex.targets.Postgres(table_name="vectors", column_options=options),
            primary_key_fields=["filename"],
            vector_indexes=[
                cocoindex.VectorIndexDef("vec", cocoindex.VectorSimilarityMetric.L2_DISTANCE)
            ],
        )

    return define


def test_changing_a_vector_column_type_keeps_its_index(tmp_path: Path, sql: SqlHelper) -> None:
    source = str(_docs(tmp_path))
    flow = cocoindex.open_flow("Retype", _vector_flow(source, halfvec=False))
    flow.setup()
    flow.update()
    assert (
        sql.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'vectors' AND indexdef LIKE '%hnsw%'"
        )
        == 1
    )
    flow.close()

    flow = cocoindex.open_flow("Retype", _vector_flow(source, halfvec=True))
    flow.setup()
    assert (
        sql.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'vectors'::regclass AND attname = 'vec'"
        )
        == "halfvec(8)"
    )
    indexes = sql.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'vectors'")
    assert any("USING hnsw (vec halfvec_l2_ops)" in r["indexdef"] for r in indexes), indexes
    # The column was re-created: every row must be written again, not skipped as unchanged.
    info = flow.update()
    assert info.stats["documents"]["num_reprocesses"] == 2
    assert sql.fetchval("SELECT count(*) FROM vectors WHERE vec IS NOT NULL") == 2


def _keyed_flow(source: str, key: list[str], table: str | None = None):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["documents"] = fb.add_source(cocoindex.sources.LocalFile(path=source))
        out = scope.add_collector()
        with scope["documents"].row() as doc:
            doc["paragraphs"] = doc["content"].transform(split_paragraphs)
            with doc["paragraphs"].row() as para:
                out.collect(filename=doc["filename"], index=para["index"], text=para["text"])
        out.export("keyed", cocoindex.targets.Postgres(table_name=table), primary_key_fields=key)

    return define


def test_key_change_and_table_rename_repopulate(tmp_path: Path, sql: SqlHelper) -> None:
    source = str(_docs(tmp_path))
    flow = cocoindex.open_flow("Keyed", _keyed_flow(source, ["filename", "index"]))
    flow.setup()
    flow.update()
    flow.close()
    # A new primary key re-creates the table: every row must be written again.
    flow = cocoindex.open_flow("Keyed", _keyed_flow(source, ["text", "filename"]))
    flow.setup()
    info = flow.update()
    assert info.stats["documents"]["num_errors"] == 0
    assert sql.fetchval("SELECT count(*) FROM keyed__keyed") == 3
    flow.close()
    # A new table name: the new table is filled, the old one dropped.
    flow = cocoindex.open_flow("Keyed", _keyed_flow(source, ["text", "filename"], "renamed"))
    flow.setup()
    flow.update()
    assert sql.fetchval("SELECT count(*) FROM renamed") == 3
    assert sql.fetchval("SELECT to_regclass('keyed__keyed')") is None
    write(Path(source) / "a.md", "alpha one")
    flow.update()
    assert sorted(r[0] for r in sql.fetch("SELECT text FROM renamed")) == ["alpha one", "beta"]


def test_full_reprocess_recomputes_memoized_results(tmp_path: Path, sql: SqlHelper) -> None:
    from tests.flows import EMBED_CALLS

    flow = cocoindex.open_flow("Full", paragraph_flow(str(_docs(tmp_path))))
    flow.setup()
    flow.update()
    before = len(EMBED_CALLS)
    flow.update(reexport_targets=True)
    assert len(EMBED_CALLS) == before, "re-export reuses memoized results"
    info = flow.update(full_reprocess=True)
    assert info.stats["documents"]["num_reprocesses"] == 2
    assert sorted(EMBED_CALLS[before:]) == ["alpha one", "alpha two", "beta"]


def test_explicit_schema_is_created_and_used(tmp_path: Path, sql: SqlHelper) -> None:
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["documents"] = fb.add_source(cocoindex.sources.LocalFile(path=str(_docs(tmp_path))))
        out = scope.add_collector()
        with scope["documents"].row() as doc:
            out.collect(filename=doc["filename"], content=doc["content"])
        out.export(
            "files",
            cocoindex.targets.Postgres(schema="Search", table_name="Files"),
            primary_key_fields=["filename"],
        )

    flow = cocoindex.open_flow("Schemed", define)
    flow.setup()
    flow.update()
    assert sql.fetchval("SELECT count(*) FROM search.files") == 2
    flow.drop()
    assert sql.fetchval("SELECT to_regclass('search.files')") is None
