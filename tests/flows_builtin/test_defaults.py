"""The built-in flows' default patterns: every language the registry knows, in any case."""

from __future__ import annotations

from cocod.executors.languages import LANGUAGES, detect_programming_language
from cocod.executors.patterns import PathFilter
from cocod.flows.defaults import EXCLUDED_BY_DEFAULT, code_included, text_included


def test_code_includes_every_detected_language_and_docs() -> None:
    code = PathFilter(code_included(), list(EXCLUDED_BY_DEFAULT))
    for info in LANGUAGES:
        for ext in info.extensions:
            for name in (f"a{ext}", f"deep/er/a{ext.upper()}"):
                if ext.count(".") == 1:  # ".h.in": the detector reads the last one only
                    assert detect_programming_language(name) == info.name
                assert code.is_included_file(name), name
    for name in ("notes.txt", "docs/x.adoc", "Makefile", "sub/Dockerfile", "README", "go.mod"):
        assert code.is_included_file(name), name
    for name in ("logo.png", "a.pyc", "Cargo.lock", "x.md.bak", "app.min.js"):
        assert not code.is_included_file(name), name
    assert code.is_excluded("node_modules") and code.is_excluded("web/node_modules")


def test_text_includes_documents_only() -> None:
    text = PathFilter(text_included(), list(EXCLUDED_BY_DEFAULT))
    for name in ("a.md", "b/C.MARKDOWN", "n.txt", "x.rst", "page.mdx"):
        assert text.is_included_file(name), name
    for name in ("main.py", "a.json", "Makefile"):
        assert not text.is_included_file(name), name
