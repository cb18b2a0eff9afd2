"""LocalFile patterns follow v0's globset rules (default GlobBuilder options)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cocod.errors import FlowDefinitionError
from cocod.executors.local_file import LocalFileReader
from cocod.executors.patterns import PathFilter, compile_glob
from cocod.ops.sources import LocalFile

# (pattern, path, matches) as globset decides with literal_separator off.
TABLE = [
    # v0 LocalFile docs' examples: "*.txt", "docs/**/*.md", "tmp", "**/node_modules"
    ("*.txt", "a.txt", True),
    ("*.txt", "deep/er/a.txt", True),  # '*' crosses '/'
    ("*.txt", "a.txt.bak", False),
    ("docs/**/*.md", "docs/a.md", True),
    ("docs/**/*.md", "docs/x/y/a.md", True),
    ("docs/**/*.md", "other/docs/a.md", False),
    ("tmp", "tmp", True),
    ("tmp", "a/tmp", False),  # no implicit "any depth" as in gitignore
    ("**/node_modules", "node_modules", True),  # the root case
    ("**/node_modules", "a/b/node_modules", True),
    ("**/node_modules", "node_modules/x", False),
    ("**/node_modules", "xnode_modules", False),
    ("**/.*", ".git", True),  # the root case
    ("**/.*", "a/.env", True),
    ("**/*.md", "README.md", True),  # the root case
    ("**/*.md", "a/b/c.md", True),
    # '**' forms
    ("a/**", "a/b", True),
    ("a/**", "a/b/c", True),
    ("a/**", "a", False),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("a/**/b", "ab", False),
    ("**", "any/thing", True),
    ("a**b", "a/x/b", True),  # not a recursive form: just '*'
    # '?', classes
    ("?.md", "a.md", True),
    ("?.md", "/.md", True),
    ("?.md", "ab.md", False),
    ("[ab].md", "b.md", True),
    ("[a-c].md", "c.md", True),
    ("[!a].md", "b.md", True),
    ("[^a].md", "a.md", False),
    ("[]a]", "]", True),
    ("[a-]", "-", True),
    ("[[:alpha:]]", "a", False),  # no POSIX classes: a class of '[', ':', 'a', … then ']'
    ("[[:alpha:]]", ":]", True),
    ("[\\]", "\\", True),  # no escapes inside a class
    # alternates
    ("*.{md,txt}", "a/b.txt", True),
    ("*.{md,txt}", "a.rst", False),
    ("{a,b{c,d}}", "bd", True),
    ("x{,a}", "x", False),  # empty alternatives are dropped
    ("x{,a}", "xa", True),
    ("{a}", "a", True),
    ("{1..3}", "2", False),  # no bash sequences
    ("{1..3}", "1..3", True),
    ("x{**/a,b}", "xa", True),
    # escapes, literal specials, case
    ("\\*", "*", True),
    ("\\*", "a", False),
    ("a,b", "a,b", True),
    ("*.MD", "a.md", False),
    # names with any characters
    ("*.md", "new\nline.md", True),
    ("*.md", "a.md\n", False),
    ("*", "caf\udce9.md", True),
    ("*.md", "tab\there.md", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), TABLE)
def test_pattern_table(pattern: str, path: str, expected: bool) -> None:
    assert compile_glob(pattern).matches(path) is expected


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("[a", "never closed"),
        ("a\\", "lone '\\'"),
        ("a}", "never opened"),
        ("{a", "never closed"),
        ("[z-a]", "backwards"),
    ],
)
def test_patterns_globset_refuses_fail_the_flow(pattern: str, why: str) -> None:
    with pytest.raises(FlowDefinitionError) as e:
        LocalFileReader(LocalFile(path=".", excluded_patterns=["ok", pattern]))
    assert repr(pattern) in str(e.value) and "excluded_patterns" in str(e.value)
    assert why in str(e.value)


def test_filter_is_v0s_pattern_matcher() -> None:
    f = PathFilter(["*.txt"], ["*temp*"])
    assert f.is_included_file("test.txt")
    assert not f.is_included_file("temp.txt")  # excluded despite matching include
    assert not f.is_included_file("main.rs")
    everything = PathFilter(None, None)
    assert everything.is_included_file("a/b.bin") and not everything.is_excluded("x")
    assert not PathFilter([], None).is_included_file("a.txt")  # an empty include list


def _tree(root: Path, files: list[str]) -> None:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)


def test_root_cases_in_a_listing(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        ["README.md", "docs/a.md", "node_modules/x.md", "src/node_modules/y.md", ".git/HEAD"],
    )
    (tmp_path / ".git" / "c.md").write_text("c")
    reader = LocalFileReader(
        LocalFile(
            path=str(tmp_path),
            included_patterns=["**/*.md"],
            excluded_patterns=["**/node_modules", "**/.*"],
        )
    )
    assert sorted(reader.list_rows_sync()) == ["README.md", "docs/a.md"]
    assert not reader.is_candidate(".git/c.md") and reader.is_excluded_dir("node_modules")
    assert reader.is_candidate("README.md")


def test_excluded_node_modules_is_never_opened(tmp_path: Path) -> None:
    """10,000 files under an excluded folder: the listing never opens that folder."""
    _tree(tmp_path, ["index.md", "src/a.md"])
    modules = tmp_path / "node_modules"
    for i in range(100):
        pkg = modules / f"pkg{i}" / "lib"
        pkg.mkdir(parents=True)
        for j in range(100):
            (pkg / f"f{j}.md").touch()
    excluded = LocalFileReader(LocalFile(path=str(tmp_path), excluded_patterns=["**/node_modules"]))
    started = time.perf_counter()
    assert sorted(excluded.list_rows_sync()) == ["index.md", "src/a.md"]
    excluded_s = time.perf_counter() - started
    assert excluded.folders_scanned == 2  # the root and src/, never node_modules/
    everything = LocalFileReader(LocalFile(path=str(tmp_path)))
    started = time.perf_counter()
    assert len(everything.list_rows_sync()) == 10_002
    everything_s = time.perf_counter() - started
    assert everything.folders_scanned == 2 + 1 + 100 * 2
    print(
        f"listing with node_modules excluded: {excluded_s * 1000:.2f} ms, "
        f"{excluded.folders_scanned} folders; without: {everything_s * 1000:.1f} ms, "
        f"{everything.folders_scanned} folders"
    )


def test_hidden_files_are_not_special(tmp_path: Path) -> None:
    _tree(tmp_path, [".env", "a/.hidden.md"])
    reader = LocalFileReader(LocalFile(path=str(tmp_path), included_patterns=["*"]))
    assert sorted(reader.list_rows_sync()) == [".env", "a/.hidden.md"]
    assert os.path.exists(tmp_path / ".env")


SUFFIX_PATTERNS = ["*.md", "*.[pP][yY]", "*/README", "*.min.js", "*.[hH].[iI][nN]", "*.c++"]
NOT_SUFFIX = ["*.[pP]y", "*.[ab]", "**.md", "*", "*\\,x", "*.{a,b}", "*.[!x]"]


def test_suffix_form_patterns_match_as_their_regex_does() -> None:
    """The endswith fast path (hundreds of extension globs) agrees with the regex on every
    path, including case, '/' and non-ASCII endings."""
    from cocod.executors.patterns import PatternSet, suffix_form

    assert all(suffix_form(p) is not None for p in SUFFIX_PATTERNS)
    assert all(suffix_form(p) is None for p in NOT_SUFFIX)
    paths = [
        "a.md", "A.MD", "x/y.Md", "md", ".md", "a.py", "a.PY", "a.Py", "b/a.pyc", "README",
        "src/README", "src/README.md", "x.min.js", "x.MIN.JS", "a.h.in", "a.H.IN", "a.c++",
        "a.C++", "é.py", "a.p\u0130", "a.\u212ay", "x/.py", "x.md\n",
    ]  # fmt: skip
    fast = PatternSet(SUFFIX_PATTERNS, "included_patterns")
    assert fast.patterns == []  # all on the fast path
    for path in paths:
        expected = any(compile_glob(p).matches(path) for p in SUFFIX_PATTERNS)
        assert fast.matches(path) == expected, path
