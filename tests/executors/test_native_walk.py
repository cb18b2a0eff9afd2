"""The compiled walk lists exactly what the Python walk lists.

Each test builds one tree and lists it twice through a real :class:`LocalFileReader`:
once on the helper (``cocod/_native.c``, several threads for a big tree) and once with the
helper switched off, so the Python walk is the oracle. Names that are not UTF-8, patterns
of every kind, git rules, symlinks, FIFOs, unreadable and vanishing folders are covered.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import anyio
import pytest

from cocod.errors import SourceError
from cocod.executors import native_walk
from cocod.executors.local_file import LocalFileReader
from cocod.ops.sources import LocalFile


def test_the_helper_is_built_by_the_install() -> None:
    # The project's install compiles it (setup.py); were it silently missing, every other
    # test here would compare the Python walk with itself.
    assert native_walk.available(), "cocod/_native.c was not built: run make install"


def _both(root: Path, monkeypatch: pytest.MonkeyPatch, **spec: object) -> dict[str, object]:
    """The native listing, after checking it equals the Python one."""
    reader = LocalFileReader(LocalFile(path=str(root), **spec))  # type: ignore[arg-type]
    native = reader.list_rows_sync()
    with monkeypatch.context() as m:
        m.setattr(native_walk, "HELPER", None)
        python = LocalFileReader(LocalFile(path=str(root), **spec)).list_rows_sync()  # type: ignore[arg-type]
    assert native == python
    return dict(native)


def _odd_tree(root: Path) -> None:
    raw = os.fsencode(root)
    for folder in [b"", b"sub", b"sub/deep", b"node_modules/pkg", b".hidden", b"caf\xc3\xa9"]:
        os.makedirs(os.path.join(raw, folder), exist_ok=True)
        for name in [b"a.md", b"b.py", b"c.txt", b".env", b"na\xe9me.md", b"with\nnewline.md"]:
            with open(os.path.join(raw, folder, name), "wb") as f:
                f.write(folder + name)
    os.symlink(root / "a.md", root / "link.md")
    os.symlink(root / "sub", root / "sublink")
    os.mkfifo(root / "fifo.md")
    (root / "sub" / "dir.md").mkdir()  # a folder whose name matches the file pattern


@pytest.mark.parametrize(
    ("included", "excluded"),
    [
        (None, None),
        (["*.md"], None),  # suffixes: tested in C
        (["*.md", "**/*.py"], None),
        (["*.md"], ["**/node_modules", "**/.*"]),  # name-only, not suffixes
        (["sub/**/*.md"], None),  # a path pattern
        (None, ["sub/deep"]),
        (["*.\udce9"], None),  # a suffix that is not valid UTF-8: tested in Python
    ],
)
def test_patterns(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    included: list[str] | None,
    excluded: list[str] | None,
) -> None:
    _odd_tree(tmp_path)
    rows = _both(tmp_path, monkeypatch, included_patterns=included, excluded_patterns=excluded)
    if included == ["*.md"] and excluded is None:
        assert "caf\u00e9/na\udce9me.md" in rows
        assert "with\nnewline.md" in rows
        assert "link.md" not in rows and "fifo.md" not in rows and "sub/dir.md" not in rows
        st = os.stat(tmp_path / "sub" / "deep" / "a.md")
        assert rows["sub/deep/a.md"] == (st.st_mtime_ns, st.st_size)


def test_git_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _odd_tree(tmp_path)
    (tmp_path / ".gitignore").write_text("*.txt\nnode_modules/\n")
    (tmp_path / "sub" / ".gitignore").write_text("deep/\n!c.txt\n")
    rows = _both(tmp_path, monkeypatch, respect_gitignore=True)
    assert "sub/c.txt" in rows and "c.txt" not in rows
    assert not any(k.startswith(("sub/deep/", "node_modules/")) for k in rows)


def _big_tree(root: Path) -> None:
    for i in range(60):
        folder = root / f"d{i % 12}" / f"e{i}"
        folder.mkdir(parents=True)
        for j in range(20):
            (folder / f"f{j}.md").write_text(str(i * j))


def _thread_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads started from now on."""
    starts: list[str] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        starts.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    return starts


def test_a_big_tree_walked_by_several_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _big_tree(tmp_path)
    starts = _thread_starts(monkeypatch)
    monkeypatch.setattr(native_walk, "WALKER_THREADS", 2)
    rows = _both(tmp_path, monkeypatch, included_patterns=["*.md"])
    assert len(rows) == 60 * 20
    assert "cocod-walk" in starts  # the second walker really ran


@pytest.mark.parametrize(
    ("tokens", "held_by_others", "helpers"), [(3, 0, 1), (2, 0, 1), (1, 0, 0), (2, 1, 0)]
)
def test_the_second_walker_takes_a_token_of_the_thread_limiter(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tokens: int,
    held_by_others: int,
    helpers: int,
) -> None:
    """A daemon's instances share one limiter: a walk starts its second thread only with
    a token to spare beside its own, and gives it back when it ends."""
    _big_tree(tmp_path)
    monkeypatch.setattr(native_walk, "WALKER_THREADS", 2)
    starts = _thread_starts(monkeypatch)

    async def listing() -> tuple[int, int]:
        limiter = anyio.CapacityLimiter(tokens)
        for i in range(held_by_others):
            limiter.acquire_on_behalf_of_nowait(f"another task {i}")
        reader = LocalFileReader(LocalFile(path=str(tmp_path), included_patterns=["*.md"]), limiter)
        rows = await reader.list_rows()
        return len(rows), limiter.borrowed_tokens

    found, borrowed_after = anyio.run(listing)
    assert found == 60 * 20
    assert starts.count("cocod-walk") == helpers
    assert borrowed_after == held_by_others  # the walk gave back what it took


def test_a_partial_listing_from_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _odd_tree(tmp_path)
    reader = LocalFileReader(LocalFile(path=str(tmp_path), included_patterns=["*.md"]))
    native = reader.list_rows_sync("sub")
    monkeypatch.setattr(native_walk, "HELPER", None)
    assert native == reader.list_rows_sync("sub")
    assert set(native) == {"sub/a.md", "sub/na\udce9me.md", "sub/with\nnewline.md", "sub/deep/a.md",
                           "sub/deep/na\udce9me.md", "sub/deep/with\nnewline.md"}  # fmt: skip


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_an_unreadable_folder_is_skipped_and_an_unreadable_root_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _odd_tree(tmp_path)
    (tmp_path / "sub").chmod(0)
    try:
        rows = _both(tmp_path, monkeypatch, included_patterns=["*.md"])
        assert not any(k.startswith("sub/") for k in rows) and "a.md" in rows
        tmp_path.chmod(0)
        with pytest.raises(SourceError, match="cannot list source root"):
            LocalFileReader(LocalFile(path=str(tmp_path))).list_rows_sync()
    finally:
        tmp_path.chmod(0o755)
        (tmp_path / "sub").chmod(0o755)


def test_a_missing_root_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        LocalFileReader(LocalFile(path=str(tmp_path / "missing"))).list_rows_sync()


def test_helper_reports_a_vanished_folder_and_skips_vanished_files(tmp_path: Path) -> None:
    helper = native_walk.HELPER
    assert helper is not None
    with pytest.raises(FileNotFoundError):
        helper.list_folder(str(tmp_path / "gone"), None)
    (tmp_path / "a.md").write_text("x")
    fd, folders, files, links = helper.list_folder(str(tmp_path), (b".md",))
    try:
        assert (folders, files, links) == ([], ["a.md"], [])
        (tmp_path / "a.md").unlink()
        out: dict[str, tuple[int, int]] = {}
        helper.stat_files(fd, "p/", ["a.md"], out)
        assert out == {}
    finally:
        os.close(fd)
