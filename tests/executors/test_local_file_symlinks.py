"""Symlinks: not followed by default; when followed, never out of the root and once per file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import cocod as cocoindex
from cocod.executors.local_file import LocalFileReader
from cocod.ops.sources import LocalFile
from tests.conftest import SqlHelper, write


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/{a.md, sub/b.md, self -> ., zlink -> sub, alias.md -> a.md,
    leak.txt -> ../outside/secret.txt, leakdir -> ../outside, dangling -> nowhere}"""
    root = tmp_path / "root"
    write(root / "a.md", "alpha")
    write(root / "sub" / "b.md", "beta")
    write(tmp_path / "outside" / "secret.txt", "secret")
    os.symlink(".", root / "self")
    os.symlink("sub", root / "zlink")
    os.symlink("a.md", root / "alias.md")
    os.symlink("../outside/secret.txt", root / "leak.txt")
    os.symlink("../outside", root / "leakdir")
    os.symlink("nowhere", root / "dangling")
    return root


def _reader(root: Path, follow: bool) -> LocalFileReader:
    return LocalFileReader(LocalFile(path=str(root), follow_symlinks=follow))


def test_default_lists_and_reads_no_symlink(tree: Path) -> None:
    reader = _reader(tree, follow=False)
    assert sorted(reader.list_rows_sync()) == ["a.md", "sub/b.md"]
    for key in ("self/a.md", "zlink/b.md", "alias.md", "leak.txt", "leakdir/secret.txt"):
        assert reader.read_row_sync(key) is None, key
    assert reader.read_row_sync("dangling") is None
    # A symlinked folder reported by the watcher is not listed either.
    assert reader.list_rows_sync(start="zlink") == {}
    assert reader.list_rows_sync(start="self") == {}
    assert sorted(reader.list_rows_sync(start="sub")) == ["sub/b.md"]
    row = reader.read_row_sync("sub/b.md")
    assert row is not None and row.value["content"] == "beta"


def test_a_file_replaced_by_a_symlink_reads_as_gone(tree: Path) -> None:
    reader = _reader(tree, follow=False)
    assert reader.read_row_sync("sub/b.md") is not None
    (tree / "sub" / "b.md").unlink()
    os.symlink("../../outside/secret.txt", tree / "sub" / "b.md")
    assert reader.read_row_sync("sub/b.md") is None


def test_keys_that_climb_out_are_refused(tree: Path) -> None:
    reader = _reader(tree, follow=True)
    for key in ("../outside/secret.txt", "sub/../../outside/secret.txt"):
        assert reader.read_row_sync(key) is None


def test_following_stays_inside_the_root_and_lists_each_file_once(tree: Path) -> None:
    reader = _reader(tree, follow=True)
    # "a.md" < "alias.md" and "sub/…" < "zlink/…": the real paths win here.
    assert sorted(reader.list_rows_sync()) == ["a.md", "sub/b.md"]
    for key in ("self/a.md", "self/sub/b.md", "zlink/b.md", "alias.md"):
        assert reader.read_row_sync(key) is None, key  # another path to a listed file
    for key in ("leak.txt", "leakdir/secret.txt", "dangling"):
        assert reader.read_row_sync(key) is None, key  # out of the root, or nowhere
    row = reader.read_row_sync("sub/b.md")
    assert row is not None and row.value["content"] == "beta"


def test_following_the_first_path_in_sorted_order_wins(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "real" / "doc.md", "doc")
    write(root / "z.md", "zed")
    os.symlink("real", root / "a_link")  # "a_link/doc.md" < "real/doc.md"
    os.symlink("z.md", root / "b.md")  # "b.md" < "z.md"
    os.symlink("b.md", root / "c.md")  # a chain: a third path to z.md
    for _ in range(2):  # deterministic: the same winner every time
        reader = _reader(root, follow=True)
        assert sorted(reader.list_rows_sync()) == ["a_link/doc.md", "b.md"]
        assert reader.read_row_sync("real/doc.md") is None
        assert reader.read_row_sync("z.md") is None
        assert reader.read_row_sync("c.md") is None
        row = reader.read_row_sync("b.md")
        assert row is not None and row.value == {"filename": "b.md", "content": "zed"}


def test_following_a_loop_terminates(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "d" / "e" / "f.md", "f")
    os.symlink("..", root / "d" / "e" / "up")  # e/up -> d: a cycle d → e → up → d
    os.symlink("../..", root / "d" / "e" / "top")  # back to the root
    reader = _reader(root, follow=True)
    assert sorted(reader.list_rows_sync()) == ["d/e/f.md"]
    assert reader.read_row_sync("d/e/up/e/f.md") is None


def _flow(spec: LocalFile) -> Callable[[cocoindex.FlowBuilder, cocoindex.DataScope], None]:
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["files"] = fb.add_source(spec)
        out = scope.add_collector()
        with scope["files"].row() as f:
            out.collect(filename=f["filename"], content=f["content"])
        out.export("files", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

    return define


@pytest.mark.parametrize("follow", [False, True])
def test_update_indexes_each_file_once_and_nothing_outside(
    tree: Path, sql: SqlHelper, follow: bool
) -> None:
    name = f"Links{int(follow)}"
    flow = cocoindex.open_flow(name, _flow(LocalFile(path=str(tree), follow_symlinks=follow)))
    flow.setup()
    flow.update()
    rows = sql.fetch(f"SELECT filename, content FROM {name.lower()}__files ORDER BY 1")
    assert [tuple(r) for r in rows] == [("a.md", "alpha"), ("sub/b.md", "beta")]
    # A second pass changes nothing: no copies under self/ appear.
    flow.update()
    rows = sql.fetch(f"SELECT filename FROM {name.lower()}__files ORDER BY 1")
    assert [r[0] for r in rows] == ["a.md", "sub/b.md"]
    flow.close()
