"""The language registry: names, aliases, extensions, and offline-only grammar loading."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from cocod.executors.languages import (
    LANGUAGES,
    LanguageInfo,
    detect_programming_language,
    load_tree_sitter_language,
    resolve_language,
)

V0_LANGUAGES_TABLE = Path(__file__).resolve().parents[1] / "data" / "v0_supported_languages.md"
"""v0's documented list, kept in the repository (an Apache-2.0 excerpt)."""


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("main.py", "python"),
        ("pkg/Main.PY", "python"),
        ("types.pyi", "python"),
        ("app.tsx", "tsx"),
        ("index.ts", "typescript"),
        ("index.js", "javascript"),
        ("lib.rs", "rust"),
        ("main.go", "go"),
        ("Main.java", "java"),
        ("x.c", "c"),
        ("x.h", "cpp"),  # as in v0: .h is C++
        ("x.cc", "cpp"),
        ("Program.cs", "csharp"),
        ("README.md", "markdown"),
        ("docs/intro.mdx", "markdown"),
        ("Cargo.toml", "toml"),
        ("ci.yml", "yaml"),
        ("ci.YAML", "yaml"),
        ("package.json", "json"),
        ("index.html", "html"),
        ("style.scss", "css"),
        ("schema.sql", "sql"),
        ("app.rb", "ruby"),
        ("index.php", "php"),
        ("Main.kt", "kotlin"),
        ("App.swift", "swift"),
        ("Main.scala", "scala"),
        ("run.sh", "bash"),
        ("archive.tar.gz", None),
        ("Makefile", None),
        ("notes.unknownext", None),
        ("", None),
        (".", None),
    ],
)
def test_detect_programming_language(filename: str, expected: str | None) -> None:
    assert detect_programming_language(filename) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("python", "python"),
        ("Python", "python"),
        (".PY", "python"),
        ("md", "markdown"),
        (".md", "markdown"),
        ("c++", "cpp"),
        ("golang", "go"),
        ("ts", "typescript"),
        ("js", "javascript"),
        ("cs", "csharp"),
        ("C#", "csharp"),
        ("rs", "rust"),
        ("delphi", "pascal"),
        ("py", None),  # an extension needs its dot unless it is also an alias
        ("klingon", None),
        ("", None),
    ],
)
def test_resolve_language(name: str, expected: str | None) -> None:
    info = resolve_language(name)
    assert (info.name if info is not None else None) == expected


def test_registry_is_consistent() -> None:
    names = [info.name for info in LANGUAGES]
    assert len(names) == len(set(names))
    for info in LANGUAGES:
        assert resolve_language(info.name) is info
        assert info.name == info.name.lower()
        for ext in info.extensions:
            assert ext.startswith("."), (info.name, ext)
            assert resolve_language(ext.upper()) is info
        for alias in info.aliases:
            assert resolve_language(alias) is info


def test_every_language_of_the_v0_docs_table_is_registered() -> None:
    """The "Supported Languages" table of v0's docs: every row resolves by name, alias and
    extension to that language, and is one the splitter splits syntactically."""
    doc = V0_LANGUAGES_TABLE.read_text(encoding="utf-8")
    section = doc.split("### Supported Languages", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    assert len(rows) > 20
    for row in rows:
        name, aliases, extensions = (cell.strip() for cell in row.strip("|").split("|"))
        info = resolve_language(name)
        assert info is not None and info.name == name, row
        assert info.has_syntax_splitting, row
        for alias in filter(None, (a.strip() for a in aliases.split(","))):
            assert resolve_language(alias) is info, (row, alias)
        for ext in re.findall(r"`(\.[^`]+)`", extensions):
            assert resolve_language(ext) is info, (row, ext)
            assert detect_programming_language(f"file{ext}") == name


# --- grammars: never downloaded -------------------------------------------------------------


def fake_pack(
    monkeypatch: pytest.MonkeyPatch, *, downloaded: list[str] | None, grammar: object
) -> list[str]:
    """Install a stand-in tree-sitter-language-pack; returns the names it was asked for."""
    asked: list[str] = []
    pack = types.ModuleType("tree_sitter_language_pack")

    def get_language(name: str) -> object:
        asked.append(name)
        return grammar

    pack.get_language = get_language  # type: ignore[attr-defined]
    if downloaded is not None:  # the 1.x API, which downloads what is not listed here
        pack.downloaded_languages = lambda: list(downloaded)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tree_sitter_language_pack", pack)
    return asked


def test_grammar_not_on_disk_is_never_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_pack(monkeypatch, downloaded=[], grammar=object())
    info = LanguageInfo("fake", tree_sitter_name="fake_grammar_not_on_disk")
    assert load_tree_sitter_language(info) is None
    assert asked == [], "get_language would have downloaded the grammar"


def test_grammar_on_disk_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    grammar = object()
    asked = fake_pack(monkeypatch, downloaded=["fake_grammar_cached"], grammar=grammar)
    info = LanguageInfo("fake", tree_sitter_name="fake_grammar_cached")
    assert load_tree_sitter_language(info) is grammar
    assert load_tree_sitter_language(info) is grammar  # cached
    assert asked == ["fake_grammar_cached"]


def test_bundled_grammars_of_old_packs_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    grammar = object()
    asked = fake_pack(monkeypatch, downloaded=None, grammar=grammar)
    info = LanguageInfo("fake", tree_sitter_name="fake_grammar_bundled")
    assert load_tree_sitter_language(info) is grammar
    assert asked == ["fake_grammar_bundled"]


def test_language_without_grammar() -> None:
    info = resolve_language("bash")
    assert info is not None and not info.has_syntax_splitting
    assert load_tree_sitter_language(info) is None
