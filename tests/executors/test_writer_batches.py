"""Target writes are one statement per batch (``unnest`` arrays), with the old semantics.

A file's chunks are upserted and its vanished chunks deleted by one statement each; these
tests hold that form to what a statement per row did: every row lands with its vector and
JSON intact, shrinking a file deletes exactly its vanished chunks (composite keys), and two
rows with one key in a batch leave the last one (ON CONFLICT may not touch a row twice).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
from pgvector.asyncpg import register_vector

import cocod as cocoindex
from cocod.engine.interfaces import ExportWrite
from cocod.executors.postgres.table import desired_state
from cocod.executors.postgres.writer import TableWriter
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow, split_paragraphs, tiny_embed, tiny_vector


def _paragraphs(n: int, tag: str = "") -> str:
    return "\n\n".join(f"paragraph {i}{tag}" for i in range(n))


def test_a_file_of_many_chunks_lands_whole_and_shrinks_exactly(
    tmp_path: Path, sql: SqlHelper
) -> None:
    docs = tmp_path / "docs"
    write(docs / "big.md", _paragraphs(300))
    write(docs / "small.md", _paragraphs(3))
    flow = cocoindex.open_flow("Batches", paragraph_flow(str(docs), table_name="batches"))
    flow.setup()
    flow.update()
    rows = sql.fetch("SELECT filename, index, text, embedding::text AS e FROM batches")
    assert len(rows) == 303
    by_key = {(r["filename"], r["index"]): r for r in rows}
    assert by_key[("big.md", 299)]["text"] == "paragraph 299"
    expected = tiny_vector("paragraph 299").tolist()
    assert [float(x) for x in by_key[("big.md", 299)]["e"].strip("[]").split(",")] == expected

    write(docs / "big.md", _paragraphs(40, tag=" v2"))  # 260 chunks vanish, 40 change
    flow.update()
    left = sql.fetch("SELECT filename, index, text FROM batches ORDER BY filename, index")
    assert [(r["filename"], r["index"], r["text"]) for r in left] == [
        *[("big.md", i, f"paragraph {i} v2") for i in range(40)],
        *[("small.md", i, f"paragraph {i}") for i in range(3)],
    ]


@cocoindex.op.function()
def tags_of(content: str) -> dict[str, Any]:
    """A JSON value holding lists and nesting: sent as JSON text, never as an array."""
    return {"words": content.split()[:3], "nested": {"n": len(content)}}


def _keyed_by_text(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope, path: str) -> None:
    scope["documents"] = fb.add_source(cocoindex.sources.LocalFile(path=path))
    out = scope.add_collector()
    with scope["documents"].row() as doc:
        doc["paragraphs"] = doc["content"].transform(split_paragraphs)
        doc["tags"] = doc["content"].transform(tags_of)
        with doc["paragraphs"].row() as para:
            para["embedding"] = para["text"].transform(tiny_embed)
            out.collect(
                text=para["text"],
                filename=doc["filename"],
                tags=doc["tags"],
                embedding=para["embedding"],
            )
    out.export(
        "by_text",
        cocoindex.targets.Postgres(table_name="by_text"),
        primary_key_fields=["text"],  # a paragraph in two files: one key, two rows
    )


def test_rows_sharing_a_key_in_one_batch_leave_one(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    for name in ["a", "b", *(f"f{i:02}" for i in range(40))]:  # commits coalesce in batches
        write(docs / f"{name}.md", f"shared words here\n\nonly {name}")
    flow = cocoindex.open_flow("ByText", lambda fb, scope: _keyed_by_text(fb, scope, str(docs)))
    flow.setup()
    flow.update()  # the shared key is written by several rows of one batch
    rows = sql.fetch("SELECT text, filename, tags, embedding::text AS e FROM by_text")
    by_text = {r["text"]: r for r in rows}
    assert len(by_text) == 43
    assert by_text["only b"]["filename"] == "b.md"
    assert by_text["shared words here"]["filename"].endswith(".md")
    assert json.loads(by_text["only b"]["tags"]) == {
        "words": ["shared", "words", "here"],
        "nested": {"n": 25},
    }
    assert [float(x) for x in by_text["only a"]["e"].strip("[]").split(",")] == (
        tiny_vector("only a").tolist()
    )


def test_one_write_with_a_key_twice_keeps_the_last_row(tmp_path: Path, sql: SqlHelper) -> None:
    """Straight through the writer: a failed batch would otherwise be retried row by row
    by the committer, hiding the ON CONFLICT error this guards against."""
    docs = tmp_path / "docs"
    write(docs / "a.md", "seed")
    flow = cocoindex.open_flow("Direct", lambda fb, scope: _keyed_by_text(fb, scope, str(docs)))
    flow.setup()
    built = flow._execution
    assert built is not None
    export = built.plan.exports["by_text"]
    writer = TableWriter(desired_state(built.full_name, export), export)

    def row(text: str, filename: str) -> dict[str, Any]:
        return {
            "text": text,
            "filename": filename,
            "tags": {"words": [filename]},
            "embedding": tiny_vector(text),
        }

    async def run() -> None:
        conn = await asyncpg.connect(sql.url)
        try:
            await register_vector(conn)
            async with conn.transaction():
                await writer.write(
                    conn,
                    ExportWrite(upserts=[row("k", "first"), row("other", "x"), row("k", "last")]),
                )
            async with conn.transaction():
                await writer.write(conn, ExportWrite(deletes=[["other"], ["other"], ["none"]]))
        finally:
            await conn.close()

    asyncio.run(run())
    rows = sql.fetch("SELECT text, filename, tags FROM by_text")
    assert [(r["text"], r["filename"], json.loads(r["tags"])) for r in rows] == [
        ("k", "last", {"words": ["last"]})
    ]
