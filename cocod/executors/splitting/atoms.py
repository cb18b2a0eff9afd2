"""Phase 1 of the split: cut the document into atoms, as v0's ``collect_atom_chunks`` does.

A depth-first walk over a stack of iterators.  The root is the whole text, as a syntax node
(a language with a grammar) or as text for the first separator level.  A piece no larger
than the *atom size* (``chunk_overlap`` when there is overlap, else ``min_chunk_size``) is an
atom; a larger syntax node is replaced by its children (and the gaps between them, as text),
unless it is childless or of a terminal kind, when it is split as text; larger text is split at
its separator level's matches, and the pieces go one level down.  Each atom records:

* its *boundary syntax level*: the smallest stack depth reached since the previous atom (a
  small number is a significant boundary: the end of a top-level item, a blank line),
* the line-break level inside it and in the gap before it,

and starts at the beginning of its line when a line break precedes it (so a chunk keeps its
first line's indentation).  The walk is iterative, so a deep syntax tree cannot exhaust
Python's recursion limit.

One deliberate difference from v0: a piece with no separator left that is larger than
``chunk_size`` (a 10 MB line without whitespace) is cut at ``chunk_size`` bytes, on character
boundaries, where v0 keeps it as one oversize atom and so one oversize chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .separators import DEFAULT_SEPARATORS, SeparatorSet
from .syntax import SyntaxTree
from .text import WHITESPACE, LineBreak, Text, line_break_level

_INLINE_SPACE = " \t"

__all__ = ["Atoms", "collect_atoms"]

# More atoms than this starting within one chunk's bytes make a region dense (see coarsen).
_DENSE_ATOMS = 128

# A stack item: byte range, and either a syntax node or (separators, next separator index).
_Item = tuple[int, int, Any, SeparatorSet | None, int]


class Atoms:
    """The atoms of one document, in order, plus v0's end sentinel (an empty atom at the end
    of the text whose boundary is a blank line)."""

    __slots__ = (
        "_current",
        "_lowest",
        "boundary_breaks",
        "chunk_size",
        "ends",
        "inner_breaks",
        "levels",
        "starts",
        "text",
    )

    def __init__(self, text: Text, chunk_size: int) -> None:
        self.text = text
        self.chunk_size = chunk_size
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.levels: list[int] = []
        self.inner_breaks: list[int] = []
        self.boundary_breaks: list[int] = []
        self._current = 0
        self._lowest = 0

    def collect(self, start: int, end: int) -> None:
        """Add ``[start, end)``, trimmed, as an atom (nothing when it is blank), starting at
        its line's beginning when a line break precedes it.

        Where v0 would make an atom larger than ``chunk_size`` (see the module docstring),
        the atom is not moved to its line's beginning if that is what makes it too large,
        and is cut at ``chunk_size`` bytes if it is too large anyway.
        """
        text = self.text
        prev_end = self.ends[-1] if self.ends else 0
        if text.is_ascii:
            # The hot path, inlined: offsets are characters and bytes alike.
            s = text.text
            right = s[start:end].rstrip(WHITESPACE)
            if not right:
                return
            both = right.lstrip(WHITESPACE)
            start += len(right) - len(both)
            end = start + len(both)
            inner = line_break_level(both) if "\n" in both or "\r" in both else 0
            if s.find("\n", prev_end, start) < 0 and s.find("\r", prev_end, start) < 0:
                boundary, aligned = 0, start
            else:  # Text.line_start, inlined: the gap has a line break
                gap = s[prev_end:start]
                boundary = line_break_level(gap)
                aligned = start - (len(gap) - len(gap.rstrip(_INLINE_SPACE)))
        else:
            start, end = text.trim(start, end)
            if start == end:
                return
            inner = line_break_level(text.slice(start, end))
            boundary, aligned = text.line_start(prev_end, start)
        if end - aligned > self.chunk_size:
            if end - start > self.chunk_size:
                self._cut(start, end)
                return
            aligned = start
        self.starts.append(aligned)
        self.ends.append(end)
        self.levels.append(self._lowest)
        self.inner_breaks.append(inner)
        self.boundary_breaks.append(boundary)
        self._lowest = self._current

    def _cut(self, start: int, end: int) -> None:
        """Atoms of at most ``chunk_size`` bytes from the trimmed ``[start, end)``, at
        character boundaries (each trimmed; whitespace at a cut is left out)."""
        text = self.text
        chunk_size = self.chunk_size
        pos = start
        while pos < end:
            stop = min(end, pos + chunk_size)
            if not text.is_ascii:
                stop = _previous_boundary(text, stop)
                if stop <= pos:  # one character wider than the whole budget
                    stop = _next_boundary(text, pos + 1)
            piece_start, piece_end = text.trim(pos, stop)
            if piece_start < piece_end:
                self._add_unaligned(piece_start, piece_end)
            pos = stop

    def _add_unaligned(self, start: int, end: int) -> None:
        prev_end = self.ends[-1] if self.ends else 0
        self.starts.append(start)
        self.ends.append(end)
        self.levels.append(self._lowest)
        self.inner_breaks.append(line_break_level(self.text.slice(start, end)))
        self.boundary_breaks.append(line_break_level(self.text.slice(prev_end, start)))
        self._lowest = self._current

    def coarsen(self, chunk_size: int) -> None:
        """Bound the merge's work where atoms are dense: where more than ``_DENSE_ATOMS``
        atoms start within ``chunk_size`` bytes (a megabyte of two-letter words, a line of
        tokens), runs of consecutive atoms there are packed into atoms of up to a 32nd of a
        chunk.  v0 has no such step (its merge is O(atoms x atoms per chunk), fast in Rust);
        it never triggers on ordinary prose or code (the corpus and the code samples have at
        most about 50 atoms per chunk), so there the atoms, and the chunks, are v0's.
        Call before ``finish``."""
        starts, ends = self.starts, self.ends
        m = len(starts)
        dense_until = 0
        dense = [False] * m
        j = 0
        for i in range(m):
            limit = starts[i] + chunk_size
            if j < i:
                j = i
            while j < m and starts[j] < limit:
                j += 1
            if j - i > _DENSE_ATOMS and j > dense_until:
                dense_until = j
            if i < dense_until:
                dense[i] = True
        if not any(dense):
            return
        pack = max(1, chunk_size // 32)
        levels, inner, boundary = self.levels, self.inner_breaks, self.boundary_breaks
        new_starts: list[int] = []
        new_ends: list[int] = []
        new_levels: list[int] = []
        new_inner: list[int] = []
        new_boundary: list[int] = []
        k = 0
        while k < m:
            first = k
            inside = inner[k]
            k += 1
            if dense[first]:
                while k < m and dense[k] and ends[k] - starts[first] <= pack:
                    inside = max(inside, inner[k], boundary[k])
                    k += 1
            new_starts.append(starts[first])
            new_ends.append(ends[k - 1])
            new_levels.append(levels[first])
            new_inner.append(inside)
            new_boundary.append(boundary[first])
        self.starts, self.ends, self.levels = new_starts, new_ends, new_levels
        self.inner_breaks, self.boundary_breaks = new_inner, new_boundary

    def finish(self) -> None:
        """Append the end sentinel."""
        n = self.text.nbytes
        self.starts.append(n)
        self.ends.append(n)
        self.levels.append(self._lowest)
        self.inner_breaks.append(LineBreak.INLINE)
        self.boundary_breaks.append(LineBreak.DOUBLE)


def _is_char_boundary(text: Text, offset: int) -> bool:
    return offset >= text.nbytes or (text.encoded[offset] & 0xC0) != 0x80


def _previous_boundary(text: Text, offset: int) -> int:
    while offset > 0 and not _is_char_boundary(text, offset):
        offset -= 1
    return offset


def _next_boundary(text: Text, offset: int) -> int:
    while offset < text.nbytes and not _is_char_boundary(text, offset):
        offset += 1
    return offset


def _root(text: Text, root: Any) -> Iterator[_Item]:
    """The root node, spanning the whole text as in v0, plus any non-blank text the grammar
    left outside the root node (v0 loses such text; an invalid YAML file can end that way),
    split with the default separators."""
    if root.start_byte > 0 and text.slice(0, root.start_byte).strip():
        yield 0, root.start_byte, None, DEFAULT_SEPARATORS, 0
    yield 0, text.nbytes, root, None, 0
    if root.end_byte < text.nbytes and text.slice(root.end_byte, text.nbytes).strip():
        yield root.end_byte, text.nbytes, None, DEFAULT_SEPARATORS, 0


def _children(node: Any) -> Iterator[_Item]:
    """A node's children in order, with the text between them (and before the first, after
    the last) as pieces for the default separators."""
    pos = node.start_byte
    for child in node.children:
        child_start = child.start_byte
        if pos < child_start:
            yield pos, child_start, None, DEFAULT_SEPARATORS, 0
            pos = child_start
        pos = child.end_byte
        yield child_start, pos, child, None, 0
    end = node.end_byte
    if pos < end:
        yield pos, end, None, DEFAULT_SEPARATORS, 0


def _pieces(
    text: Text, separators: SeparatorSet, start: int, end: int, index: int
) -> Iterator[_Item]:
    following = index + 1
    if text.is_ascii and separators.in_place:
        # The hot path, inlined: no offset conversion, no copy of the range.
        pos = start
        for m in separators.patterns[index].finditer(text.text, start, end):
            yield pos, m.start(), None, separators, following
            pos = m.end()
        if pos < end:
            yield pos, end, None, separators, following
        return
    for piece_start, piece_end in separators.pieces(text, start, end, index):
        yield piece_start, piece_end, None, separators, following


def collect_atoms(
    text: Text,
    tree: SyntaxTree | None,
    separators: SeparatorSet,
    atom_size: int,
    chunk_size: int,
) -> Atoms:
    """Walk the document (along ``tree`` when given, else with ``separators``) into atoms."""
    atoms = Atoms(text, chunk_size)
    stack: list[Iterator[_Item]]
    if tree is not None:
        stack = [_root(text, tree.root)]
        terminal = tree.terminal_kind_ids
    else:
        stack = [iter(((0, text.nbytes, None, separators, 0),))]
        terminal = frozenset()
    while stack:
        atoms._current = len(stack)
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            depth = len(stack)
            atoms._current = depth
            if depth < atoms._lowest:
                atoms._lowest = depth
            continue
        start, end, node, seps, index = item
        if end - start <= atom_size:
            atoms.collect(start, end)
        elif node is not None:
            if node.child_count and node.kind_id not in terminal:
                stack.append(_children(node))
            else:
                stack.append(iter(((start, end, None, DEFAULT_SEPARATORS, 0),)))
        elif seps is not None and index < len(seps):
            stack.append(_pieces(text, seps, start, end, index))
        else:
            atoms.collect(start, end)
    atoms._current = 0
    atoms.coarsen(chunk_size)
    atoms.finish()
    return atoms
