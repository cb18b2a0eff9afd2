"""The code flow live (real file-system events): ignored folders stay out, and an edited
.gitignore re-evaluates the source without waiting for the periodic rescan (minutes)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cocod as cocoindex
from cocod.flows import CodeParams, code
from tests.conftest import SqlHelper, write
from tests.flows import tiny_embed
from tests.flows_builtin.repo import BUILD_FILES, CODE_FILES, hermetic_git, make_working_tree

__all__ = ["hermetic_git"]

TIMEOUT = 10.0


def tiny(text_slice: cocoindex.DataSlice[Any]) -> cocoindex.DataSlice[Any]:
    return text_slice.transform(tiny_embed)


class LiveRepo:
    def __init__(self, repo: Path, sql: SqlHelper) -> None:
        self.repo, self.sql = repo, sql

    def files(self) -> list[str]:
        return [r[0] for r in self.sql.fetch("SELECT DISTINCT filename FROM live__chunks")]

    def wait_for(self, expected: list[str], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while sorted(self.files()) != sorted(expected):
            if time.monotonic() > deadline:
                pytest.fail(f"after {what}: indexed {sorted(self.files())} != {sorted(expected)}")
            time.sleep(0.05)


@pytest.fixture
def live(tmp_path: Path, sql: SqlHelper) -> Iterator[LiveRepo]:
    repo = make_working_tree(tmp_path / "repo")
    flow = cocoindex.open_flow("live", code(CodeParams(path=str(repo)), embed=tiny))
    flow.setup()
    updater = cocoindex.FlowLiveUpdater(flow)  # no refresh_interval: events only
    updater.start()
    helper = LiveRepo(repo, sql)
    helper.wait_for(CODE_FILES, "the catch-up pass")
    yield helper
    updater.abort()
    updater.wait()


def test_changes_in_ignored_folders_are_not_indexed(live: LiveRepo) -> None:
    write(live.repo / "build" / "late.py", "LATE = 1\n")
    write(live.repo / "node_modules" / "late" / "index.js", "late\n")
    write(live.repo / "src" / "app" / "debug.log", "log\n")
    write(live.repo / ".git" / "COMMIT_EDITMSG", "msg\n")
    write(live.repo / "src" / "app" / "new.py", "NEW = 1\n")  # the marker that events flowed
    live.wait_for([*CODE_FILES, "src/app/new.py"], "edits in and out of ignored folders")


def test_editing_gitignore_re_evaluates_the_source_live(live: LiveRepo) -> None:
    (live.repo / ".gitignore").write_text("*.log\n")
    live.wait_for([*CODE_FILES, *BUILD_FILES], "unignoring build/")
    (live.repo / ".gitignore").write_text("build/\n*.log\n")
    live.wait_for(CODE_FILES, "ignoring build/ again")
    # A nested .gitignore re-evaluates its own folder.
    (live.repo / "docs" / ".gitignore").write_text("# nothing ignored\n")
    live.wait_for([*CODE_FILES, "docs/drafts/wip.md"], "unignoring docs/drafts/")
    (live.repo / "docs" / ".gitignore").write_text("drafts/\n")
    live.wait_for(CODE_FILES, "ignoring docs/drafts/ again")
