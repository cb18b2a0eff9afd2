"""The listing's fast paths decide exactly what the general glob matcher decides.

A no-op update at 50,000 files is one walk, so name-only patterns (``*.md``,
``**/*.py``, ``**/node_modules``) are matched on the entry's name by ``endswith`` or a set
lookup, and folders are scanned through an open descriptor. These tests hold the fast
paths to globset's answers (the regex of :func:`compile_glob`) and to the general walk.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from cocod.errors import SourceError
from cocod.executors.local_file import LocalFileReader
from cocod.executors.patterns import PathFilter, PatternSet, compile_glob
from cocod.ops.sources import LocalFile

NAME_ONLY = ["*.md", "**/*.py", "**/node_modules", "*.[mM][dD][xX]", "**/*.tar.gz", "*~"]
GENERAL = ["*/x.md", "docs/*.md", "**/.*", "a/**", "{a,b}.txt", "**/*/y.md"]
PATHS = [
    "a.md", "d/a.md", "d/e/a.md", "a.md/x", "amd", "a.py", "x/y/z.py", "py", "a.pyc",
    "node_modules", "x/node_modules", "xnode_modules", "node_modules/x", "a.MDX", "b/c.Mdx",
    "a.mdxx", "v.tar.gz", "w/v.tar.gz", "v.gz", "n~", "m/n~", "x.md", "q/x.md", "docs/a.md",
    "docs/z/a.md", ".env", "a/.env", "a/b", "a", "b.txt", "c.txt", "p/q/y.md", "y.md",
    "caf\u00e9.md", "na\udce9me.py", "ends with\n.md",
]  # fmt: skip


@pytest.mark.parametrize("pattern", NAME_ONLY + GENERAL)
def test_pattern_set_agrees_with_the_glob_regex(pattern: str) -> None:
    glob = compile_glob(pattern)
    one = PatternSet([pattern], "included_patterns")
    for path in PATHS:
        assert one.matches(path) == glob.matches(path), (pattern, path)
        if one.name_only:
            name = path.rsplit("/", 1)[-1]
            assert one.matches_name(name) == glob.matches(path), (pattern, path)


def test_name_only_patterns_need_no_regex() -> None:
    assert PatternSet(NAME_ONLY, "included_patterns").name_only
    assert PatternSet(NAME_ONLY, "included_patterns").patterns == []  # all on the fast path
    for pattern in GENERAL:
        assert not PatternSet([pattern, "*.md"], "included_patterns").name_only, pattern
    assert PathFilter(["*.md"], ["**/*.tmp.md"]).name_only
    assert not PathFilter(["*.md"], ["docs/**"]).name_only


@pytest.mark.parametrize(
    ("included", "excluded"),
    [
        (["*.md"], None),
        (["*.md", "**/*.py"], ["**/skip.md", "**/node_modules"]),
        (None, ["*.txt"]),
        (["*.md"], ["sub1/*"]),  # a path pattern: the general per-path test
    ],
)
def test_name_only_filter_agrees_with_the_path_filter(
    included: list[str] | None, excluded: list[str] | None
) -> None:
    f = PathFilter(included, excluded)
    names = ["a.md", "skip.md", "b.py", "c.txt", "node_modules", "d"]
    for folder, name in itertools.product(["", "sub1/", "sub1/deep/"], names):
        if f.name_only:
            assert f.is_included_name(name) == f.is_included_file(folder + name)


def _tree(root: Path) -> None:
    for folder in ["", "sub1", "sub1/deep", "node_modules/pkg", "other"]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in ["a.md", "skip.md", "b.py", "c.txt"]:
            (root / folder / name).write_text(folder + name)
    os.symlink(root / "a.md", root / "link.md")


def _listed(root: Path, included: list[str] | None, excluded: list[str] | None) -> set[str]:
    spec = LocalFile(path=str(root), included_patterns=included, excluded_patterns=excluded)
    return set(LocalFileReader(spec).list_rows_sync())


def test_walk_with_name_patterns_lists_what_path_patterns_list(tmp_path: Path) -> None:
    _tree(tmp_path)
    fast = _listed(tmp_path, ["*.md", "**/*.py"], ["**/skip.md", "**/node_modules"])
    # The same sets spelled so that no fast path applies (a class per character).
    slow = _listed(tmp_path, ["{*.m[d],**/*.p[y]}"], ["{**/skip.m[d],**/node_module[s]}"])
    assert fast == slow == {
        f"{folder}{name}" for folder in ["", "sub1/", "sub1/deep/", "other/"]
        for name in ["a.md", "b.py"]
    }  # fmt: skip


def test_walk_reports_the_root_and_keeps_mtimes_and_sizes(tmp_path: Path) -> None:
    _tree(tmp_path)
    rows = LocalFileReader(LocalFile(path=str(tmp_path))).list_rows_sync()
    st = os.stat(tmp_path / "sub1" / "deep" / "c.txt")
    assert rows["sub1/deep/c.txt"] == (st.st_mtime_ns, st.st_size)
    assert "link.md" not in rows  # symlinks are not followed by default
    with pytest.raises(SourceError):
        LocalFileReader(LocalFile(path=str(tmp_path / "missing"))).list_rows_sync()


def test_suffix_only_filters_are_one_endswith() -> None:
    assert PathFilter(["*.md", "**/*.py"], None).name_suffixes == (".md", ".py")
    assert PathFilter(["*.md"], ["**/skip.md"]).name_suffixes is None  # excludes: the general test
    assert PathFilter(["*.md", "**/node_modules"], None).name_suffixes is None
    assert PathFilter(None, None).name_suffixes is None  # everything: no test at all


def test_walk_with_suffix_patterns_lists_what_path_patterns_list(tmp_path: Path) -> None:
    _tree(tmp_path)
    fast = _listed(tmp_path, ["*.md", "**/*.py"], None)
    slow = _listed(tmp_path, ["{*.m[d],**/*.p[y]}"], None)
    assert fast == slow
    assert len(fast) == 5 * 3  # a.md, skip.md, b.py in each of five folders
