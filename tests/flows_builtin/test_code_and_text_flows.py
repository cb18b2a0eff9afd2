"""cocod.flows:code and :text on a real working tree and real Postgres (tiny embedder).

Only what git would track is indexed (not .git/, build/, *.log, a nested .gitignore's
folder, node_modules/); editing .gitignore re-evaluates the source on the next update.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import cocod as cocoindex
from cocod.daemon.definitions import load_definition
from cocod.errors import FlowDefinitionError
from cocod.flows import CodeParams, TextParams, code, text
from tests.conftest import SqlHelper
from tests.flows import tiny_embed
from tests.flows_builtin.repo import (
    BUILD_FILES,
    CODE_FILES,
    MAIN_PY,
    TEXT_FILES,
    hermetic_git,
    make_working_tree,
)

__all__ = ["hermetic_git"]


def tiny(text_slice: cocoindex.DataSlice[Any]) -> cocoindex.DataSlice[Any]:
    return text_slice.transform(tiny_embed)


def _files(sql: SqlHelper, table: str) -> list[str]:
    return [r[0] for r in sql.fetch(f"SELECT DISTINCT filename FROM {table} ORDER BY 1")]


def test_code_flow_indexes_what_git_tracks(tmp_path: Path, sql: SqlHelper) -> None:
    repo = make_working_tree(tmp_path / "repo")
    params = CodeParams(path=str(repo), chunk_size=150, chunk_overlap=0)
    flow = cocoindex.open_flow("repo", code(params, embed=tiny))
    flow.setup()
    flow.update()
    assert _files(sql, "repo__chunks") == CODE_FILES
    rows = sql.fetch(
        "SELECT filename, lower(location) AS s, upper(location) AS e, start_line, end_line, "
        "language, text FROM repo__chunks"
    )
    for row in rows:  # line numbers are the chunk's, computed from its position
        content = (repo / row["filename"]).read_text()
        assert content[row["s"] : row["e"]] == row["text"]
        assert row["start_line"] == content[: row["s"]].count("\n") + 1
        assert row["end_line"] == content[: row["e"]].count("\n") + 1
    languages = {r["filename"]: r["language"] for r in rows}
    assert languages["src/app/main.py"] == "python"
    assert languages["docs/guide.md"] == "markdown"
    assert languages["notes.txt"] is None
    main = [r for r in rows if r["filename"] == "src/app/main.py"]
    assert len(main) > 1, "syntax-aware splitting at the chunk size"
    assert min(r["start_line"] for r in main) == 1
    assert max(r["end_line"] for r in main) == MAIN_PY.count("\n")
    index = sql.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'repo__chunks' "
        "AND indexdef LIKE '%vector_cosine_ops%'"
    )
    assert index is not None


def test_editing_gitignore_indexes_then_deletes_build(tmp_path: Path, sql: SqlHelper) -> None:
    repo = make_working_tree(tmp_path / "repo")
    flow = cocoindex.open_flow(
        "repo", code(CodeParams(path=str(repo), table="repo_code"), embed=tiny)
    )
    flow.setup()
    flow.update()
    assert not set(BUILD_FILES) & set(_files(sql, "repo_code"))
    (repo / ".gitignore").write_text("*.log\n")
    flow.update()
    assert _files(sql, "repo_code") == sorted([*CODE_FILES, *BUILD_FILES])
    (repo / ".gitignore").write_text("build/\n*.log\n")
    info = flow.update()
    assert _files(sql, "repo_code") == CODE_FILES
    assert info.stats["files"]["num_deletions"] == len(BUILD_FILES)
    # A nested .gitignore: unignoring docs/drafts/ indexes it.
    (repo / "docs" / ".gitignore").write_text("")
    flow.update()
    assert "docs/drafts/wip.md" in _files(sql, "repo_code")


def test_text_flow_indexes_documents_only(tmp_path: Path, sql: SqlHelper) -> None:
    repo = make_working_tree(tmp_path / "repo")
    flow = cocoindex.open_flow("notes", text(TextParams(path=str(repo)), embed=tiny))
    flow.setup()
    flow.update()
    assert _files(sql, "notes__chunks") == TEXT_FILES
    guide = sql.fetch(
        "SELECT text, start_line, end_line FROM notes__chunks WHERE filename = 'docs/guide.md'"
    )
    assert [(r["start_line"], r["end_line"]) for r in guide] == [(1, 7)]


def test_params_replace_the_defaults(tmp_path: Path, sql: SqlHelper) -> None:
    repo = make_working_tree(tmp_path / "repo")
    params = TextParams(
        path=str(repo),
        table="docs_only",
        included_patterns=["*.md"],
        excluded_patterns=[],  # node_modules is indexed when asked for
        chunk_size=20,
        chunk_overlap=0,
    )
    flow = cocoindex.open_flow("docs", text(params, embed=tiny))
    flow.setup()
    flow.update()
    assert _files(sql, "docs_only") == [
        "README.md",
        "docs/guide.md",
        "node_modules/left-pad/README.md",
    ]
    count = sql.fetchval("SELECT count(*) FROM docs_only WHERE filename = 'docs/guide.md'")
    assert isinstance(count, int) and count > 1


def test_the_daemon_loader_builds_them_from_config_params(tmp_path: Path) -> None:
    repo = make_working_tree(tmp_path / "repo")
    for flow in ("code", "text"):
        definition = load_definition(
            f"cocod.flows:{flow}", {"path": str(repo), "table": "t"}, None, "inst"
        )
        assert callable(definition)
    with pytest.raises(FlowDefinitionError, match=r"unknown param.*colour"):
        load_definition("cocod.flows:code", {"path": str(repo), "colour": 1}, None, "inst")
    with pytest.raises(FlowDefinitionError, match=r"params\.path"):
        load_definition("cocod.flows:text", {"path": ""}, None, "inst")
    with pytest.raises(FlowDefinitionError, match="chunk_size"):
        code(CodeParams(path=str(repo), chunk_size=0))


def test_cocod_flows_is_still_v0s_function(tmp_path: Path, cocod_db: str) -> None:
    """Importing the package binds cocod.flows to it; v0's cocod.flows() must keep working."""
    import cocod
    import cocod.flows

    repo = make_working_tree(tmp_path / "repo")
    flow = cocoindex.open_flow("listed", text(TextParams(path=str(repo)), embed=tiny))
    assert cocod.flows() == {"listed": flow}
    assert getattr(cocod.flows, "code") is code  # noqa: B009  (mypy sees v0's function)
