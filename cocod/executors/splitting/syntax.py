"""Syntax trees for the splitter: parse under a work budget, and v0's terminal node kinds.

v0 walks a language's tree-sitter tree from the root; a node is split at its children unless
it is childless or of a *terminal* kind, which is then split as plain text.  Only markdown has
terminal kinds in v0 (``inline``, ``indented_code_block``, ``fenced_code_block``: a paragraph's
text and a code block are never cut along their inner syntax).
"""

from __future__ import annotations

import importlib
import threading
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
_PARSE_READ_SIZE = 1 << 16


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


class _Reader:
    """Feeds a document to tree-sitter's read callback from buffers that live as long as the
    thread, because tree-sitter 0.26.1's binding keeps a reference to every object a read
    callback returns: returning slices of the document leaked the whole document per parse
    (about 9 KB a file, 515 MB over 50,000 files).  Here every returned object is one of a
    fixed set of views of one per-thread buffer (a full one, and one per power of two for the
    tail), so a kept reference costs nothing; the callbacks themselves are this object's
    bound methods, made once, and the document is dropped when the parse ends.
    ``parser.parse(bytes)`` does not leak but takes no progress callback, which bounds the
    work (see ``_parse``).
    """

    __slots__ = (
        "_budget",
        "_buffer",
        "_document",
        "_full",
        "_pieces",
        "_steps",
        "parser_by_grammar",
        "progress",
        "read",
    )

    def __init__(self) -> None:
        self._buffer = bytearray(_PARSE_READ_SIZE)
        view = memoryview(self._buffer)
        self._full = view
        # _pieces[k] is the first 2**k bytes of the buffer.
        self._pieces = [view[: 1 << k] for k in range(_PARSE_READ_SIZE.bit_length() - 1)]
        self._document = b""
        self._steps = 0
        self._budget = 0
        # id(grammar) -> (grammar, parser); the grammar is kept so that its id is never reused.
        self.parser_by_grammar: dict[int, tuple[Any, Any]] = {}
        # Bound once: a bound method made per call would be a new object per parse.
        self.read = self._read
        self.progress = self._progress

    def start(self, encoded: bytes, budget: int) -> None:
        self._document = encoded
        self._steps = 0
        self._budget = budget

    def stop(self) -> None:
        self._document = b""

    def _read(self, offset: int, _point: Any) -> Any:
        encoded = self._document
        left = len(encoded) - offset
        if left <= 0:
            return b""  # a shared constant: keeping it costs nothing
        if left >= _PARSE_READ_SIZE:
            self._buffer[:] = encoded[offset : offset + _PARSE_READ_SIZE]
            return self._full
        piece = self._pieces[left.bit_length() - 1]
        size = len(piece)
        self._buffer[:size] = encoded[offset : offset + size]
        return piece

    def _progress(self, _offset: int, _has_error: bool) -> bool:
        self._steps += 1
        return self._steps > self._budget


_local = threading.local()


def _thread_reader() -> _Reader:
    reader: _Reader | None = getattr(_local, "reader", None)
    if reader is None:
        reader = _local.reader = _Reader()
    return reader


def _parse(grammar: Any, encoded: bytes) -> Any:
    """Parse with tree-sitter under a work budget proportional to the input.

    Error recovery on pathological input (a megabyte of nested brackets, long invalid code)
    can take seconds and gigabytes; the parser's progress callback runs every fixed number of
    parser operations, so counting its calls bounds the work *deterministically* (the same
    text always gets the same result, unlike a wall-clock timeout).  Over budget, the parse is
    cancelled, which raises.  Real Python, C and JSON files (measured on a few thousand) use
    at most about half of the budget.  v0 has no budget: this is where cocod may split plain
    text where v0 would have used a (pathological) tree.  One parser per thread and grammar
    is reused (a cancelled parse is reset before the next one).
    """
    reader = _thread_reader()
    entry = reader.parser_by_grammar.get(id(grammar))
    if entry is None:
        tree_sitter: Any = importlib.import_module("tree_sitter")
        entry = reader.parser_by_grammar[id(grammar)] = (grammar, tree_sitter.Parser(grammar))
    parser = entry[1]
    reader.start(encoded, _PARSE_BASE_STEPS + len(encoded) // _PARSE_BYTES_PER_STEP)
    try:
        return parser.parse(reader.read, progress_callback=reader.progress)
    except TypeError:  # tree-sitter < 0.25 has no progress callback
        return parser.parse(encoded)
    except Exception:
        parser.reset()  # a cancelled parse would otherwise resume on the next call
        raise
    finally:
        reader.stop()
