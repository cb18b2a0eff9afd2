"""Built-in flow factories, for indexing folders without writing Python.

``config.toml`` names them as ``definition = "cocod.flows:text"`` (notes, documents) or
``definition = "cocod.flows:code"`` (a repository: every file whose language
``DetectProgrammingLanguage`` knows, its docs included), with a ``[flows.<name>.params]``
table that becomes :class:`TextParams` / :class:`CodeParams`; ``cocod add NAME --path DIR
--flow code|text`` writes the same. Both respect ``.gitignore`` and write one row per
chunk (``filename``, ``location``, ``start_line``, ``end_line``, ``language``, ``text``,
``embedding``) to one table. docs/built-in-flows.md is the user's page.

A factory is ``factory(params) -> definition``, the shape the daemon's loader takes
(:mod:`cocod.daemon.definitions`); the definition itself does no I/O.

``cocod.flows`` is also v0's ``cocoindex.flows()`` (the open flows by name). Importing
this package binds the name ``flows`` on ``cocod`` to the package, which would shadow
that function, so the package is callable and its call is that function.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from cocod.flows.chunks import EXPORT_NAME, Embed, FlowDef, chunk_flow
from cocod.flows.defaults import (
    CODE_CHUNK_OVERLAP,
    CODE_CHUNK_SIZE,
    EXCLUDED_BY_DEFAULT,
    TEXT_CHUNK_OVERLAP,
    TEXT_CHUNK_SIZE,
    code_included,
    text_included,
)
from cocod.flows.params import DEFAULT_MODEL, ChunkFlowParams, CodeParams, TextParams

if TYPE_CHECKING:
    from cocod.runtime.flow import Flow

__all__ = [
    "DEFAULT_MODEL",
    "EXPORT_NAME",
    "ChunkFlowParams",
    "CodeParams",
    "TextParams",
    "code",
    "text",
]


def text(params: TextParams, *, embed: Embed | None = None) -> FlowDef:
    """Markdown and plain-text documents, split along headings and paragraphs.

    ``embed`` replaces the model (a seam for tests and callers with their own op).
    """
    return chunk_flow(
        params,
        flow="text",
        included=text_included(),
        excluded=EXCLUDED_BY_DEFAULT,
        chunk_size=TEXT_CHUNK_SIZE,
        chunk_overlap=TEXT_CHUNK_OVERLAP,
        embed=embed,
    )


def code(params: CodeParams, *, embed: Embed | None = None) -> FlowDef:
    """Source code split along its syntax (tree-sitter where a grammar is available),
    markdown and plain-text docs included."""
    return chunk_flow(
        params,
        flow="code",
        included=code_included(),
        excluded=EXCLUDED_BY_DEFAULT,
        chunk_size=CODE_CHUNK_SIZE,
        chunk_overlap=CODE_CHUNK_OVERLAP,
        embed=embed,
    )


class _CallableFlowsModule(types.ModuleType):
    """``cocod.flows()`` keeps meaning v0's ``cocoindex.flows()`` once this package is
    imported (the import makes ``cocod.flows`` this module)."""

    def __call__(self) -> dict[str, Flow]:
        from cocod.runtime.flow import flows

        return flows()


sys.modules[__name__].__class__ = _CallableFlowsModule
