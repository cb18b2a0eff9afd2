"""The CocoIndex v0 text- and code-embedding examples, unchanged but for the import, index
real files with the real all-MiniLM-L6-v2 model, and a query finds the right file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

import cocod as cocoindex
from tests.conftest import SqlHelper

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
"""The repository's own documentation: real prose, present in every clone."""
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@cocoindex.transform_flow()
def text_to_embedding(
    text: cocoindex.DataSlice[str],
) -> cocoindex.DataSlice[NDArray[np.float32]]:
    return text.transform(cocoindex.functions.SentenceTransformerEmbed(model=MODEL))


def text_embedding_flow(source: str):  # type: ignore[no-untyped-def]
    def define(flow_builder: cocoindex.FlowBuilder, data_scope: cocoindex.DataScope) -> None:
        data_scope["documents"] = flow_builder.add_source(cocoindex.sources.LocalFile(path=source))
        doc_embeddings = data_scope.add_collector()
        with data_scope["documents"].row() as doc:
            doc["chunks"] = doc["content"].transform(
                cocoindex.functions.SplitRecursively(),
                language="markdown",
                chunk_size=2000,
                chunk_overlap=500,
            )
            with doc["chunks"].row() as chunk:
                chunk["embedding"] = text_to_embedding(chunk["text"])
                doc_embeddings.collect(
                    filename=doc["filename"],
                    location=chunk["location"],
                    text=chunk["text"],
                    embedding=chunk["embedding"],
                )
        doc_embeddings.export(
            "doc_embeddings",
            cocoindex.targets.Postgres(),
            primary_key_fields=["filename", "location"],
            vector_indexes=[
                cocoindex.VectorIndexDef(
                    field_name="embedding",
                    metric=cocoindex.VectorSimilarityMetric.COSINE_SIMILARITY,
                )
            ],
        )

    return define


@cocoindex.op.function()
def extract_extension(filename: str) -> str:
    return Path(filename).suffix


@cocoindex.transform_flow()
def code_to_embedding(
    text: cocoindex.DataSlice[str],
) -> cocoindex.DataSlice[NDArray[np.float32]]:
    return text.transform(cocoindex.functions.SentenceTransformerEmbed(model=MODEL))


def code_embedding_flow(source: str):  # type: ignore[no-untyped-def]
    def define(flow_builder: cocoindex.FlowBuilder, data_scope: cocoindex.DataScope) -> None:
        data_scope["files"] = flow_builder.add_source(
            cocoindex.sources.LocalFile(path=source, included_patterns=["*.py", "*.rs", "*.md"])
        )
        code_embeddings = data_scope.add_collector()
        with data_scope["files"].row() as file:
            file["language"] = file["filename"].transform(
                cocoindex.functions.DetectProgrammingLanguage()
            )
            file["chunks"] = file["content"].transform(
                cocoindex.functions.SplitRecursively(),
                language=file["language"],
                chunk_size=1000,
                min_chunk_size=300,
                chunk_overlap=300,
            )
            with file["chunks"].row() as chunk:
                chunk["embedding"] = chunk["text"].call(code_to_embedding)
                code_embeddings.collect(
                    filename=file["filename"],
                    location=chunk["location"],
                    code=chunk["text"],
                    embedding=chunk["embedding"],
                    start=chunk["start"],
                    end=chunk["end"],
                )
        code_embeddings.export(
            "code_embeddings",
            cocoindex.targets.Postgres(),
            primary_key_fields=["filename", "location"],
            vector_indexes=[
                cocoindex.VectorIndexDef(
                    field_name="embedding",
                    metric=cocoindex.VectorSimilarityMetric.COSINE_SIMILARITY,
                )
            ],
        )

    return define


def test_text_embedding_flow_indexes_and_answers_queries(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    names = ("getting-started.md", "guide/daemon.md", "guide/systemd.md", "postgres-target.md")
    for name in names:
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DOCS / Path(name).name, docs / name)
    flow = cocoindex.open_flow("TextEmbedding", text_embedding_flow(str(docs)))
    flow.setup()
    info = flow.update()
    assert info.stats["documents"]["num_insertions"] == 4
    chunks = sql.fetchval("SELECT count(*) FROM textembedding__doc_embeddings")
    assert isinstance(chunks, int) and chunks >= 8
    assert (
        sql.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
            "'textembedding__doc_embeddings'::regclass AND attname = 'embedding'"
        )
        == "vector(384)"
    )

    # A phrase taken from one file finds that file first.
    phrase = next(
        line
        for line in (docs / "guide/systemd.md").read_text().splitlines()
        if len(line) > 60 and "systemd" not in line.lower()
    )
    output = flow.query(phrase, top_k=3)
    assert output.results[0]["filename"] == "guide/systemd.md"
    assert output.results[0]["score"] > output.results[-1]["score"]

    # Query-time embedding through the transform flow equals the indexed embeddings.
    query_vec = text_to_embedding.eval(phrase)
    assert query_vec.shape == (384,) and query_vec.dtype == np.float32
    top = sql.fetch(
        "SELECT filename FROM textembedding__doc_embeddings ORDER BY embedding <=> $1::vector "
        "LIMIT 1",
        "[" + ",".join(map(str, query_vec.tolist())) + "]",
    )
    assert top[0]["filename"] == "guide/systemd.md"


def test_code_embedding_flow_with_language_detection(tmp_path: Path, sql: SqlHelper) -> None:
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(REPO / "cocod" / "engine" / "indexer.py", code / "indexer.py")
    shutil.copy(REPO / "cocod" / "executors" / "local_file.py", code / "local_file.py")
    shutil.copy(DOCS / "setup-and-lifecycle.md", code / "lifecycle.md")
    flow = cocoindex.open_flow("CodeEmbedding", code_embedding_flow(str(code)))
    flow.setup()
    flow.update()
    rows = sql.fetch(
        'SELECT filename, lower(location) AS s, upper(location) AS e, code, start, "end" '
        "FROM codeembedding__code_embeddings"
    )
    assert {r["filename"] for r in rows} == {"indexer.py", "local_file.py", "lifecycle.md"}
    sources = {name: (code / name).read_text() for name in ("indexer.py", "local_file.py")}
    for r in rows:
        if r["filename"] in sources:
            assert sources[r["filename"]][r["s"] : r["e"]] == r["code"]
            assert '"line"' in r["start"] and '"offset"' in r["end"]
    output = flow.query("glob pattern matching for included and excluded files", top_k=3)
    assert output.results[0]["filename"] == "local_file.py"
