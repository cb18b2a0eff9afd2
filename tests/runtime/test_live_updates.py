"""Live updates on the real file system: every kind of edit converges to the from-scratch
build, through file-system events (not the periodic rescan), and nothing is embedded twice."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import cocod as cocoindex
from cocod.executors.local_file import LocalFileReader
from cocod.runtime.watcher import classify_changes
from tests.conftest import SqlHelper, write
from tests.flows import EMBED_CALLS, paragraph_flow, paragraphs_of

TIMEOUT = 15.0


def expected_rows(docs: Path) -> list[tuple[str, int, str]]:
    rows = []
    for path in sorted(docs.rglob("*")):
        if path.is_file():
            key = path.relative_to(docs).as_posix()
            rows.extend((key, p.index, p.text) for p in paragraphs_of(path.read_text()))
    return sorted(rows)


class Live:
    def __init__(self, docs: Path, sql: SqlHelper, table: str) -> None:
        self.docs, self.sql, self.table = docs, sql, table
        self.seen: set[str] = set()
        self.calls_before = len(EMBED_CALLS)

    def rows(self) -> list[tuple[str, int, str]]:
        return sorted(
            tuple(r) for r in self.sql.fetch(f"SELECT filename, index, text FROM {self.table}")
        )

    def converges(self, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while True:
            expected = expected_rows(self.docs) if self.docs.is_dir() else None
            actual = self.rows()
            if expected is not None and actual == expected:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"after {what}: table {actual} != files {expected}")
            time.sleep(0.02)
        calls = EMBED_CALLS[self.calls_before :]
        self.calls_before = len(EMBED_CALLS)
        assert len(calls) == len(set(calls)), f"after {what}: embedded twice in one go: {calls}"
        assert not self.seen.intersection(calls), f"after {what}: re-embedded {calls}"
        self.seen.update(calls)


@pytest.fixture
def live(tmp_path: Path, sql: SqlHelper) -> Iterator[Live]:
    docs = tmp_path / "docs"
    write(docs / "start.md", "initial paragraph\n\nsecond paragraph")
    flow = cocoindex.open_flow("Watched", paragraph_flow(str(docs)))
    flow.setup()
    # No refresh_interval is set and the default rescan is minutes away: every change
    # below must arrive through file-system events.
    updater = cocoindex.FlowLiveUpdater(flow)
    updater.start()
    helper = Live(docs, sql, "watched__paragraphs")
    helper.converges("the catch-up pass")
    yield helper
    updater.abort()
    updater.wait()


def test_each_kind_of_edit_converges(live: Live, tmp_path: Path) -> None:
    docs = live.docs
    steps: list[tuple[str, Callable[[], object]]] = [
        ("create", lambda: write(docs / "new.md", "brand new\n\nsecond paragraph")),
        ("modify", lambda: write(docs / "new.md", "brand new\n\nedited paragraph")),
        ("rename", lambda: os.replace(docs / "new.md", docs / "renamed.md")),
        ("delete", lambda: (docs / "renamed.md").unlink()),
        ("touch without change", lambda: os.utime(docs / "start.md")),
        ("create in a new folder", lambda: write(docs / "sub" / "deep" / "x.md", "nested text")),
        ("move a folder out", lambda: shutil.move(docs / "sub", tmp_path / "outside")),
        ("move a folder in", lambda: shutil.move(tmp_path / "outside", docs / "back")),
        ("delete a folder", lambda: shutil.rmtree(docs / "back")),
    ]
    for what, action in steps:
        action()
        live.converges(what)


def test_editor_atomic_save(live: Live) -> None:
    target = live.docs / "start.md"
    temp = live.docs / ".start.md.swp"
    temp.write_text("initial paragraph\n\nsaved by an editor")
    os.replace(temp, target)
    live.converges("write-temp-then-rename save")
    backup = live.docs / "start.md~"
    os.replace(target, backup)
    write(target, "initial paragraph\n\nsaved again")
    backup.unlink()
    live.converges("backup-rename-write save")


def test_root_deleted_and_recreated_by_another_process(live: Live) -> None:
    rows_before = live.rows()
    subprocess.run(
        [sys.executable, "-c", "import shutil, sys; shutil.rmtree(sys.argv[1])", str(live.docs)],
        check=True,
    )
    # While the root is gone the flow reports an error and keeps every row.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert live.rows() == rows_before
        time.sleep(0.05)
    recreate = (
        "import os, sys; os.makedirs(sys.argv[1]);"
        "open(os.path.join(sys.argv[1], 'again.md'), 'w').write('restored root')"
    )
    subprocess.run([sys.executable, "-c", recreate, str(live.docs)], check=True)
    live.converges("root deleted and re-created")


def test_burst_of_changes_is_processed_once_per_file(live: Live) -> None:
    for i in range(200):
        write(live.docs / "burst" / f"f{i:03}.md", f"burst file {i}\n\nshared burst paragraph")
    live.converges("a burst of 200 new files")


# -- pause and resume -----------------------------------------------------------------------
def _open_updater(docs: Path, name: str) -> tuple[cocoindex.Flow, cocoindex.FlowLiveUpdater]:
    flow = cocoindex.open_flow(name, paragraph_flow(str(docs)))
    flow.setup()
    return flow, cocoindex.FlowLiveUpdater(flow)


def _stays(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check(), what
        time.sleep(0.05)


def test_a_paused_updater_keeps_hints_and_catches_up_on_resume(
    tmp_path: Path, sql: SqlHelper
) -> None:
    docs = tmp_path / "docs"
    write(docs / "start.md", "initial paragraph")
    _, updater = _open_updater(docs, "Paused")
    live = Live(docs, sql, "paused__paragraphs")
    updater.start()
    try:
        live.converges("the catch-up pass")
        before = live.rows()
        updater.pause()
        write(docs / "new.md", "written while paused")
        write(docs / "start.md", "initial paragraph\n\nedited while paused")
        # The watcher still collects the hints: they show as pending, and nothing runs.
        deadline = time.monotonic() + TIMEOUT
        while updater.snapshot()["pending_changes"] < 2:
            assert time.monotonic() < deadline, updater.snapshot()
            time.sleep(0.05)
        assert updater.snapshot()["paused"] is True
        _stays(lambda: live.rows() == before, 1.5, "a paused updater wrote rows")
        updater.resume()
        live.converges("resume")
        assert updater.snapshot()["paused"] is False
    finally:
        updater.abort()
        updater.wait()


def test_an_updater_started_paused_runs_its_catch_up_pass_on_resume(
    tmp_path: Path, sql: SqlHelper
) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "first\n\nsecond")
    _, updater = _open_updater(docs, "StartedPaused")
    live = Live(docs, sql, "startedpaused__paragraphs")
    updater.pause()
    updater.start()  # returns once the watcher is registered; the pass waits
    try:
        write(docs / "b.md", "while paused at start")
        _stays(lambda: live.rows() == [], 1.5, "the catch-up pass ran while paused")
        assert updater.snapshot()["caught_up"] is False
        updater.resume()
        live.converges("resume after a paused start")
    finally:
        updater.abort()
        updater.wait()


# -- git rules files --------------------------------------------------------------------------
def test_a_changed_gitignore_hints_what_its_rules_cover(tmp_path: Path) -> None:
    """Its own folder for a nested .gitignore, a full pass for the root's; nothing when
    git rules are off (a .gitignore is then just a file)."""
    root = tmp_path / "repo"
    (root / ".git" / "info").mkdir(parents=True)
    write(root / ".gitignore", "build/\n")
    write(root / "docs" / ".gitignore", "drafts/\n")
    write(root / ".git" / "info" / "exclude", "")
    reader = LocalFileReader(cocoindex.sources.LocalFile(path=str(root), respect_gitignore=True))

    def hints(*relative: str) -> tuple[set[str], bool]:
        changes = [(2, str(root / r)) for r in relative]
        got = classify_changes(reader, str(root), changes)
        return got.dirs, got.full_pass

    assert hints("docs/.gitignore") == ({"docs"}, False)
    assert hints(".gitignore") == (set(), True)
    assert hints(".git/info/exclude") == (set(), True)
    assert hints("docs/readme.md") == (set(), False)
    plain = LocalFileReader(cocoindex.sources.LocalFile(path=str(root)))
    assert not classify_changes(plain, str(root), [(2, str(root / ".gitignore"))]).full_pass
