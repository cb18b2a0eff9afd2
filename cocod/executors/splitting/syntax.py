"""Syntax trees for the splitter: parse under a work budget, and v0's terminal node kinds.

v0 walks a language's tree-sitter tree from the root; a node is split at its children unless
it is childless or of a *terminal* kind, which is then split as plain text.  Only markdown has
terminal kinds in v0 (``inline``, ``indented_code_block``, ``fenced_code_block``: a paragraph's
text and a code block are never cut along their inner syntax).
"""

from __future__ import annotations

import importlib
from typing import Any

from ..languages import LanguageInfo, load_tree_sitter_language

__all__ = ["SyntaxTree", "parse"]

# v0's terminal node kinds per language (prog_langs.rs); named kinds.
_TERMINAL_KINDS: dict[str, tuple[str, ...]] = {
    "markdown": ("inline", "indented_code_block", "fenced_code_block"),
}

# Parse work budget: progress callbacks allowed, base plus one per this many bytes; and how
# much input the parser reads per callback.
_PARSE_BASE_STEPS = 1000
_PARSE_BYTES_PER_STEP = 50
_PARSE_READ_SIZE = 1 << 20


class SyntaxTree:
    """A parsed document: its root node and the kind ids never split along their syntax."""

    __slots__ = ("root", "terminal_kind_ids")

    def __init__(self, root: Any, terminal_kind_ids: frozenset[int]) -> None:
        self.root = root
        self.terminal_kind_ids = terminal_kind_ids


def parse(info: LanguageInfo, encoded: bytes) -> SyntaxTree | None:
    """The syntax tree of ``encoded`` in ``info``'s language, or ``None`` when no grammar is
    available offline or the parse runs over its budget (the caller then splits plain text).
    """
    grammar = load_tree_sitter_language(info)
    if grammar is None:
        return None
    try:
        tree = _parse(grammar, encoded)
    except Exception:
        # Over budget (cancelled), or a grammar failing: plain text, never an error.
        return None
    kinds = _TERMINAL_KINDS.get(info.name, ())
    ids = frozenset(i for i in (grammar.id_for_node_kind(k, True) for k in kinds) if i)
    return SyntaxTree(tree.root_node, ids)


def _parse(grammar: Any, encoded: bytes) -> Any:
    """Parse with tree-sitter under a work budget proportional to the input.

    Error recovery on pathological input (a megabyte of nested brackets, long invalid code)
    can take seconds and gigabytes; the parser's progress callback runs every fixed number of
    parser operations, so counting its calls bounds the work *deterministically* (the same
    text always gets the same result, unlike a wall-clock timeout).  Over budget, the parse is
    cancelled, which raises.  Real Python, C and JSON files (measured on a few thousand) use
    at most about half of the budget.  v0 has no budget: this is where cocod may split plain
    text where v0 would have used a (pathological) tree.
    """
    tree_sitter: Any = importlib.import_module("tree_sitter")
    parser = tree_sitter.Parser(grammar)
    budget = _PARSE_BASE_STEPS + len(encoded) // _PARSE_BYTES_PER_STEP
    steps = 0

    def over_budget(_offset: int, _has_error: bool) -> bool:
        nonlocal steps
        steps += 1
        return steps > budget

    view = memoryview(encoded)
    try:
        return parser.parse(
            lambda offset, _point: view[offset : offset + _PARSE_READ_SIZE],
            progress_callback=over_budget,
        )
    except TypeError:  # tree-sitter < 0.25 has no progress callback
        return parser.parse(encoded)
