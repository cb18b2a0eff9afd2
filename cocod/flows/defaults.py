"""What the built-in flows index when the params name no patterns.

Globs follow LocalFile's (v0's) rules, where ``*`` crosses '/', so ``*.py`` is a ``.py``
file at any depth. Extensions match in any case, as ``DetectProgrammingLanguage`` does
(``README.MD`` is markdown): each letter becomes a two-case class (``*.[mM][dD]``).
"""

from __future__ import annotations

from collections.abc import Iterable

from cocod.executors.languages import LANGUAGES, resolve_language

PLAIN_TEXT_EXTENSIONS = (".txt", ".text", ".adoc", ".asciidoc", ".org")
"""Documents no language claims: split as plain text (paragraphs, lines, words)."""

CODE_EXTRA_NAMES = ("Dockerfile", "Makefile", "README", "go.mod")
"""Files without an extension a repository's reader still wants found."""

EXCLUDED_BY_DEFAULT = (
    "**/node_modules",
    "**/package-lock.json",
    "**/pnpm-lock.yaml",
    "*.min.js",
    "*.min.css",
)
"""Skipped even when no ``.gitignore`` says so: dependencies and machine-written files
whose chunks would crowd out the project's own in every search. ``.git/`` needs no entry
(the ignore rules always skip it)."""

TEXT_CHUNK_SIZE, TEXT_CHUNK_OVERLAP = 2000, 500
CODE_CHUNK_SIZE, CODE_CHUNK_OVERLAP = 1000, 300


def _glob_char(c: str) -> str:
    if c.isalpha() and c.lower() != c.upper():
        return f"[{c.lower()}{c.upper()}]"
    return "\\" + c if c in "*?[]{},\\!" else c


def extension_globs(extensions: Iterable[str]) -> list[str]:
    """``".md"`` → ``"*.[mM][dD]"``, deduplicated, in order."""
    seen: dict[str, None] = {}
    for ext in extensions:
        seen.setdefault("*" + "".join(_glob_char(c) for c in ext.lower()), None)
    return list(seen)


def _markdown_extensions() -> tuple[str, ...]:
    info = resolve_language("markdown")
    assert info is not None
    return info.extensions


def text_included() -> list[str]:
    """Markdown (every extension the registry gives it) and plain-text documents."""
    return extension_globs((*_markdown_extensions(), *PLAIN_TEXT_EXTENSIONS, ".rst"))


def code_included() -> list[str]:
    """Every extension a language of the registry claims, plus plain-text documents and
    a few extension-less names (at the root or in any folder)."""
    extensions = [ext for info in LANGUAGES for ext in info.extensions]
    names = [p for name in CODE_EXTRA_NAMES for p in (name, f"*/{name}")]
    return [*extension_globs((*extensions, *PLAIN_TEXT_EXTENSIONS)), *names]
