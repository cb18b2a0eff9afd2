"""cocod.flows:code as config.toml names it, with its default (real, bundled) model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

import cocod as cocoindex
from cocod.daemon.definitions import load_definition
from cocod.executors.embedder import load_model
from cocod.flows import DEFAULT_MODEL
from tests.conftest import SqlHelper
from tests.flows_builtin.repo import CODE_FILES, hermetic_git, make_working_tree

__all__ = ["hermetic_git"]


def query_embedding(text: str) -> NDArray[np.float32]:
    """The query side, as a search embeds it: the same (shared, already loaded) model."""
    vector: NDArray[np.float32] = load_model(DEFAULT_MODEL).encode(text)
    return vector


def test_code_flow_with_the_default_model_finds_the_right_file(
    tmp_path: Path, sql: SqlHelper
) -> None:
    repo = make_working_tree(tmp_path / "repo")
    definition = load_definition("cocod.flows:code", {"path": str(repo)}, None, "myrepo")
    flow = cocoindex.open_flow("myrepo", definition)
    flow.setup()
    flow.update()
    assert [r[0] for r in sql.fetch("SELECT DISTINCT filename FROM myrepo__chunks ORDER BY 1")] == (
        CODE_FILES
    )
    assert (
        sql.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'myrepo__chunks'::regclass AND attname = 'embedding'"
        )
        == "vector(384)"
    )
    vector = query_embedding("a class that greets a person by name")
    hits = sql.fetch(
        "SELECT filename, start_line, end_line FROM myrepo__chunks "
        "ORDER BY embedding <=> $1::vector LIMIT 1",
        "[" + ",".join(str(float(x)) for x in vector) + "]",
    )
    assert hits[0]["filename"] == "src/app/main.py"
    assert hits[0]["start_line"] == 1
    # The flow's own query path (what `cocod query` runs) embeds with the same model.
    found = flow.query("a class that greets a person by name", top_k=1)
    top = found.results[0]
    assert (top["filename"], top["start_line"]) == ("src/app/main.py", 1)
    assert top["end_line"] >= top["start_line"] and "Greeter" in top["text"]
