"""A module written for CocoIndex v0 runs on cocod and produces the table v0 would."""

from __future__ import annotations

from pathlib import Path

import pytest

import cocod as cocoindex
from cocod.errors import FlowClosedError
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow


def test_v0_style_flow_creates_v0_table(
    tmp_path: Path, sql: SqlHelper, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "docs" / "a.md", "# Title\n\nFirst paragraph.\n\nSecond one.")
    write(tmp_path / "docs" / "sub" / "b.md", "Only paragraph.")
    flow = cocoindex.open_flow("TextEmbedding", paragraph_flow(str(tmp_path / "docs")))

    flow.setup(report_to_stdout=True)
    printed = capsys.readouterr().out
    assert "[ TO CREATE ] Flow: TextEmbedding" in printed
    assert "Postgres table textembedding__paragraphs" in printed

    info = flow.update()
    assert info.stats["documents"]["num_insertions"] == 2
    assert "2/2 source rows: 2 added" in str(info)

    # v0's default table name, folded to lower case as Postgres did for v0's unquoted DDL.
    assert cocoindex.utils.get_target_default_name(flow, "paragraphs") == (
        "TextEmbedding__paragraphs"
    )
    columns = sql.fetch(
        "SELECT column_name, data_type, udt_name, is_nullable FROM information_schema.columns "
        "WHERE table_name = 'textembedding__paragraphs' ORDER BY ordinal_position"
    )
    assert [(c["column_name"], c["udt_name"], c["is_nullable"]) for c in columns] == [
        ("filename", "text", "NO"),
        ("index", "int8", "NO"),
        ("text", "text", "YES"),
        ("embedding", "vector", "YES"),
    ]
    assert (
        sql.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'textembedding__paragraphs'::regclass AND attname = 'embedding'"
        )
        == "vector(8)"
    )
    pk = sql.fetch(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'textembedding__paragraphs'::regclass "
        "AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)"
    )
    assert [r["attname"] for r in pk] == ["filename", "index"]
    indexdef = sql.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'textembedding__paragraphs' "
        "AND indexname = 'textembedding__paragraphs__embedding__vector_cosine_ops'"
    )
    assert isinstance(indexdef, str) and "USING hnsw (embedding vector_cosine_ops)" in indexdef
    # Unquoted SQL, as users wrote against v0 tables, reaches the table.
    rows = sql.fetch("SELECT filename, index, text FROM TextEmbedding__paragraphs ORDER BY 1, 2")
    assert [tuple(r) for r in rows] == [
        ("a.md", 0, "# Title"),
        ("a.md", 1, "First paragraph."),
        ("a.md", 2, "Second one."),
        ("sub/b.md", 0, "Only paragraph."),
    ]

    flow.drop(report_to_stdout=True)
    assert "[ TO DELETE ] Flow: TextEmbedding" in capsys.readouterr().out
    assert sql.fetchval("SELECT to_regclass('textembedding__paragraphs')") is None
    assert sql.fetchval("SELECT count(*) FROM cocod.tracking") == 0
    flow.close()
    with pytest.raises(FlowClosedError):
        flow.update()
