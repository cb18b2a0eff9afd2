"""`SplitRecursively`: cut a document into chunks along its most meaningful boundaries.

The splitter works in two phases, as CocoIndex v0 does:

1. **Atoms.**  The text is split at its highest-level boundaries (markdown headings, top-level
   syntax nodes, blank lines, …); every piece that is still larger than the *atom size* is split
   again at the next level down, until pieces are small or no boundary is left, in which case the
   piece is cut at a fixed byte size (so an unsplittable 10 MB token still yields bounded
   chunks).  Each atom remembers how significant the boundary before it is (its *level*: 0 is the
   start or end of the document, larger numbers are finer boundaries).
2. **Merge.**  A dynamic programme over the atoms picks the chunking of least cost: every chunk
   fits in ``chunk_size`` bytes, chunks smaller than ``min_chunk_size`` are heavily penalised, a
   chunk whose own edges are finer boundaries than one it contains pays for it, and when
   ``chunk_overlap`` is asked for, each chunk may start up to that many bytes before the previous
   one ends (at an atom boundary) and is rewarded for doing so.

Sizes are UTF-8 bytes, as in v0; offsets in the output are *character* (code point) offsets, as
v0's code emits (its docs say "byte offset", its code does not).  Chunks are whitespace-trimmed
at both ends.  The code avoids per-character Python loops: all scanning is done by ``re`` and
``str`` methods, and atoms are packed so that the merge step sees a bounded number of candidates
per chunk.
"""

from __future__ import annotations

import bisect
import importlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from .languages import load_tree_sitter_language, resolve_language

__all__ = ["Chunk", "CustomLanguage", "RecursiveSplitter", "TextPosition"]


@dataclass(frozen=True, slots=True)
class TextPosition:
    """A position in the original text: character offset, 1-based line and column."""

    offset: int
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Chunk:
    """One output row: ``text == original[location[0]:location[1]]`` (character offsets)."""

    location: tuple[int, int]
    text: str
    start: TextPosition
    end: TextPosition


@dataclass(frozen=True)
class CustomLanguage:
    """A user-defined language: separators as regexes, highest-level boundary first.

    The regexes use Python's ``re`` syntax (v0 used Rust's ``regex``; the common subset is the
    same).  A match is a separator: the text it covers is left out at a chunk boundary.
    """

    language_name: str
    separators_regex: list[str]
    aliases: list[str] = field(default_factory=list)


# --- Cost model of the merge step (units are arbitrary; only their ratios matter). ---
# Every chunk costs this much, so fewer, fuller chunks win when nothing else differs.
_CHUNK_COST = 600.0
# The reward for overlap: a chunk that starts ``chunk_overlap`` bytes before the previous one
# ends saves all of it.  It must stay below ``_CHUNK_COST``: then adding a chunk only to gain
# overlap never pays, which guarantees no chunk is nested inside another.
_OVERLAP_MISS_COST = 400.0
# A chunk smaller than ``min_chunk_size``: avoided whenever any other plan exists.
_TOO_SMALL_COST = 1_000_000.0
# A chunk edge that is a finer boundary than one inside the chunk, by ``d`` levels, costs
# 200 + 100 * min(d, 11) (written out inline in ``_plan``, its hot loop).
# A chunk edge that falls mid-line (or mid-paragraph) when the chunk contains line breaks
# (blank lines): per step of 0 = inline, 1 = newline, 2 = blank line.
_LINE_BREAK_GAP_COST = 60.0

# A boundary level no real boundary reaches.
_NO_LEVEL = 1 << 30
# Parse work budget (see ``_parse``): progress callbacks allowed, base plus one per this many
# bytes; and how much input the parser reads per callback.
_PARSE_BASE_STEPS = 1000
_PARSE_BYTES_PER_STEP = 50
_PARSE_READ_SIZE = 1 << 20
# Syntax trees deeper than this are split as plain text below that depth (bounded recursion).
_MAX_TREE_DEPTH = 48

# A level yields the separators found in ``text[start:end]`` as ``(cut_start, cut_end)`` spans,
# in order: the piece before a separator ends at ``cut_start``, the next begins at ``cut_end``.
# Lazily: a 10 MB line of words has millions of separators, and holding them all in a list
# would cost hundreds of MB.
_Level = Callable[[str, int, int], Iterator[tuple[int, int]]]


def _regex_level(pattern: str, *, group_is_separator: bool = False) -> _Level:
    """A level from a regex whose matches are separators.

    With ``group_is_separator`` (the built-in levels), when the matching alternative has a
    capture group only the group is the separator and the text before it stays with the left
    piece: this keeps sentence punctuation with its sentence.  Custom languages' regexes are
    separators as a whole, as in v0, whatever groups they contain.
    """
    compiled = re.compile(pattern)

    if compiled.groups == 0 or not group_is_separator:

        def whole(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
            return (m.span() for m in compiled.finditer(text, start, end))

        return whole

    def grouped(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
        for m in compiled.finditer(text, start, end):
            group = m.lastindex
            yield m.span(group) if group else m.span()

    return grouped


# The plain-text hierarchy, highest level first: blank-line runs, newlines, sentence ends,
# clause punctuation, commas, any whitespace.  Punctuation stays with the text before it.
_PLAIN_LEVELS: tuple[_Level, ...] = (
    _regex_level(r"\n\s*\n"),
    _regex_level(r"\n"),
    _regex_level(r"[.?!](\s+)|[。？！](\s*)", group_is_separator=True),
    _regex_level(r"[;:\-](\s+)|[；：](\s*)|—+(\s*)", group_is_separator=True),
    _regex_level(r",(\s+)|[，、](\s*)", group_is_separator=True),
    _regex_level(r"\s+"),
)

# Markdown lines that matter (headings, fence markers), searched as "newline + marker": a
# literal prefix lets ``re`` skip ahead quickly, where ``^`` with MULTILINE is several times
# slower.  The first line is matched on its own.
_MD_LINE_RE = re.compile(r"\n {0,3}(?:(#{1,6})(?=[ \t\r\n]|\Z)|(`{3,}|~{3,})([^\n]*))")
_MD_FIRST_LINE_RE = re.compile(r" {0,3}(?:(#{1,6})(?=[ \t\r\n]|\Z)|(`{3,}|~{3,})([^\n]*))")
_BLANK_LINES_RE = re.compile(r"\n\s*\n")


def _markdown_levels(text: str) -> list[_Level]:
    """Levels for one markdown document: headings 1-6, then blocks, then plain text.

    One pass finds headings and fenced code blocks (``#`` lines inside a fence are code, not
    headings); blocks are separated by blank lines outside fences and by the fences' edges, so
    a whole fence is one block, which the merge keeps intact where it fits.
    """
    fence_starts: list[int] = []
    fence_ends: list[int] = []
    headings: list[list[int]] = [[] for _ in range(6)]
    if "#" in text or "```" in text or "~~~" in text:
        opened: tuple[int, str, int] | None = None
        first = _MD_FIRST_LINE_RE.match(text)
        matches = [first] if first is not None else []
        matches.extend(_MD_LINE_RE.finditer(text))
        for m in matches:
            hashes, run, rest = m.group(1, 2, 3)
            if hashes is not None:
                if opened is None:
                    headings[len(hashes) - 1].append(m.start() if m is first else m.start() + 1)
            elif opened is None:
                if run[0] == "`" and "`" in rest:
                    continue  # an inline code span, not a fence
                opened = (m.start() if m is first else m.start() + 1, run[0], len(run))
            elif run[0] == opened[1] and len(run) >= opened[2] and not rest.strip():
                fence_starts.append(opened[0])
                fence_ends.append(m.end())
                opened = None
        if opened is not None:
            fence_starts.append(opened[0])
            fence_ends.append(len(text))

    # Block boundaries in document order: blank-line runs outside fences, and fence edges.
    block_cuts: list[tuple[int, int]] = []
    k = 0
    fences = len(fence_starts)
    for m in _BLANK_LINES_RE.finditer(text):
        pos = m.start()
        while k < fences and fence_ends[k] <= pos:
            block_cuts.append((fence_starts[k], fence_starts[k]))
            block_cuts.append((fence_ends[k], fence_ends[k]))
            k += 1
        if k < fences and fence_starts[k] <= pos:
            continue  # a blank line inside a fence
        block_cuts.append(m.span())
    for rest_k in range(k, fences):
        block_cuts.append((fence_starts[rest_k], fence_starts[rest_k]))
        block_cuts.append((fence_ends[rest_k], fence_ends[rest_k]))

    def heading_level(positions: list[int]) -> _Level:
        def cuts(_text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
            lo = bisect.bisect_right(positions, start)
            hi = bisect.bisect_left(positions, end, lo)
            return iter([(p, p) for p in positions[lo:hi]])

        return cuts

    def blocks(_text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
        # Cuts lying wholly inside (start, end); one straddling an edge is part of the
        # whitespace already trimmed off the piece.
        lo = bisect.bisect_right(block_cuts, (start, start))
        hi = bisect.bisect_left(block_cuts, (end, end), lo)
        return iter([span for span in block_cuts[lo:hi] if span[1] <= end])

    levels: list[_Level] = [heading_level(positions) for positions in headings]
    levels.append(blocks)
    levels.extend(_PLAIN_LEVELS)
    return levels


class _Atoms:
    """Collects atoms of one document, in order, with the level of the boundary before each.

    ``pending`` is the most significant (lowest) boundary level crossed since the last atom;
    the next atom takes it.
    """

    __slots__ = ("ascii", "atom_size", "ends", "levels", "pending", "starts", "text")

    def __init__(self, text: str, atom_size: int) -> None:
        self.text = text
        self.ascii = text.isascii()
        self.atom_size = atom_size
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.levels: list[int] = []
        self.pending = 0

    def nbytes(self, start: int, end: int) -> int:
        if self.ascii:
            return end - start
        return _utf8_len(self.text[start:end])

    def trim(self, start: int, end: int) -> tuple[int, int]:
        """``[start, end)`` without its leading and trailing whitespace (empty: start == end)."""
        piece = self.text[start:end]
        left = piece.lstrip()
        if not left:
            return start, start
        start += len(piece) - len(left)
        return start, start + len(left.rstrip())

    def add(self, start: int, end: int, level: int) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.levels.append(level)

    def piece(self, start: int, end: int, levels: Sequence[_Level], base: int) -> None:
        """Turn an untrimmed span into atoms: one atom when small, else split it."""
        start, end = self.trim(start, end)
        if start == end:
            return
        if self.nbytes(start, end) <= self.atom_size:
            self.add(start, end, self.pending)
            self.pending = _NO_LEVEL
        else:
            self.split(start, end, levels, 0, base)

    def split(self, start: int, end: int, levels: Sequence[_Level], index: int, base: int) -> None:
        """Split a trimmed span larger than the atom size at the first level that has a
        boundary in it, packing consecutive small pieces into atoms of up to the atom size and
        recursing into big ones; cut it at fixed sizes when no level has a boundary."""
        text = self.text
        count = len(levels)
        while index < count:
            cuts = levels[index](text, start, end)
            first_cut = next(cuts, None)
            if first_cut is not None:
                break
            index += 1
        else:
            self.hard_cut(start, end, base + count)
            return
        level = base + index
        atom_size = self.atom_size
        is_ascii = self.ascii

        pack_start = -1
        pack_end = -1
        pack_level = 0
        pack_bytes = 0
        first = True
        pos = start
        for cut_start, cut_end in chain((first_cut,), cuts, ((end, end),)):
            if cut_start < pos:  # overlapping separators
                if cut_end > pos:
                    pos = cut_end
                continue
            piece_start, piece_end = pos, cut_start
            pos = cut_end
            raw = text[piece_start:piece_end]
            stripped = raw.lstrip()
            if not stripped:
                continue
            piece_start += len(raw) - len(stripped)
            stripped = stripped.rstrip()
            piece_end = piece_start + len(stripped)
            size = len(stripped) if is_ascii else _utf8_len(stripped)
            if size <= atom_size and pack_start >= 0:
                gap = piece_start - pack_end if is_ascii else _utf8_len(text[pack_end:piece_start])
                if pack_bytes + gap + size <= atom_size:
                    pack_end = piece_end
                    pack_bytes += gap + size
                    continue
            if pack_start >= 0:
                self.add(pack_start, pack_end, pack_level)
                pack_start = -1
            if first:
                first = False
            elif level < self.pending:
                self.pending = level
            if size <= atom_size:
                pack_start, pack_end, pack_bytes = piece_start, piece_end, size
                pack_level = self.pending
                self.pending = _NO_LEVEL
            else:
                self.split(piece_start, piece_end, levels, index + 1, base)
        if pack_start >= 0:
            self.add(pack_start, pack_end, pack_level)

    def hard_cut(self, start: int, end: int, level: int) -> None:
        """Cut a span with no boundary left into pieces of at most the atom size in bytes, at
        character boundaries (the merge puts them back together up to ``chunk_size``).
        Linear in the span: each step encodes one window."""
        text = self.text
        cut = self.atom_size
        pos = start
        while pos < end:
            stop = min(end, pos + cut)
            if not self.ascii:
                encoded = text[pos:stop].encode("utf-8", "surrogatepass")
                if len(encoded) > cut:
                    stop = pos + _chars_within(encoded, cut)
                    if stop == pos:  # one character wider than the whole budget
                        stop = pos + 1
            piece_start, piece_end = self.trim(pos, stop)
            pos = stop
            if piece_start == piece_end:
                continue
            self.add(piece_start, piece_end, self.pending)
            self.pending = level

    def tree(self, root: Any, encoded: bytes) -> None:
        """Atoms along a tree-sitter syntax tree of ``encoded`` (the text as UTF-8).

        The root is treated as the only child of the whole text, so text the grammar leaves
        outside its root node is kept too.
        """
        to_char = _ByteToChar(encoded, self.ascii)
        self._children([root], 0, len(encoded), 0, to_char)

    def _node(self, node: Any, depth: int, to_char: _ByteToChar) -> None:
        """Split a node larger than the atom size: at its children, or as plain text when it is
        a leaf or too deep."""
        children = node.children
        if not children or depth >= _MAX_TREE_DEPTH:
            self.piece(to_char(node.start_byte), to_char(node.end_byte), _PLAIN_LEVELS, depth + 2)
            return
        self._children(children, node.start_byte, node.end_byte, depth, to_char)

    def _children(
        self, children: list[Any], start: int, end: int, depth: int, to_char: _ByteToChar
    ) -> None:
        """Atoms for the byte span ``[start, end)`` made of ``children`` and the gaps between
        them: small neighbours are packed, big children recursed into, and non-blank gaps
        split as plain text.  Byte offsets are converted in increasing order only."""
        encoded = to_char.encoded
        level = depth + 1
        atom_size = self.atom_size
        pack_start = -1  # in bytes; -1: no pack open
        pack_char_start = 0
        pack_level = 0
        first = True
        prev_end = start
        for child in [*children, None]:
            gap_end = end if child is None else min(max(child.start_byte, prev_end), end)
            if gap_end > prev_end and encoded[prev_end:gap_end].strip():
                # Text between children (stray tokens, text outside the root): flush, then
                # split it as plain text below this level.
                if pack_start >= 0:
                    self._flush(pack_char_start, to_char(prev_end), pack_level)
                    pack_start = -1
                if first:
                    first = False
                elif level < self.pending:
                    self.pending = level
                self.piece(to_char(prev_end), to_char(gap_end), _PLAIN_LEVELS, level + 1)
            prev_end = max(prev_end, gap_end)
            if child is None:
                break
            child_end = min(child.end_byte, end)
            if child_end <= prev_end:
                continue  # zero-width (missing) nodes
            size = child_end - prev_end
            if size <= atom_size and pack_start >= 0 and child_end - pack_start <= atom_size:
                prev_end = child_end
                continue
            if pack_start >= 0:
                self._flush(pack_char_start, to_char(prev_end), pack_level)
                pack_start = -1
            if first:
                first = False
            elif level < self.pending:
                self.pending = level
            if size <= atom_size:
                pack_start = prev_end
                pack_char_start = to_char(prev_end)
                pack_level = self.pending
                self.pending = _NO_LEVEL
            else:
                self._node(child, depth + 1, to_char)
            prev_end = child_end
        if pack_start >= 0:
            self._flush(pack_char_start, to_char(prev_end), pack_level)

    def _flush(self, start: int, end: int, level: int) -> None:
        """Add a pack of syntax nodes as one atom (trimmed); a blank one adds nothing but
        keeps its boundary level pending."""
        start, end = self.trim(start, end)
        if start == end:
            if level < self.pending:
                self.pending = level
            return
        self.add(start, end, level)


class _ByteToChar:
    """Converts byte offsets of the UTF-8 text to character offsets, moving forward only, so
    that a whole tree walk costs one pass over the text."""

    __slots__ = ("byte_pos", "char_pos", "encoded", "identity")

    def __init__(self, encoded: bytes, identity: bool) -> None:
        self.encoded = encoded
        self.identity = identity
        self.byte_pos = 0
        self.char_pos = 0

    def __call__(self, byte_offset: int) -> int:
        if self.identity:
            return byte_offset
        if byte_offset < self.byte_pos:
            raise _TreeWalkError("byte offsets must be converted in increasing order")
        self.char_pos += len(self.encoded[self.byte_pos : byte_offset].decode("utf-8"))
        self.byte_pos = byte_offset
        return self.char_pos


class _TreeWalkError(Exception):
    """Internal: the syntax tree could not be used; the caller falls back to plain text."""


def _utf8_len(piece: str) -> int:
    """UTF-8 size of ``piece``; ``isascii`` is O(1) in CPython, so ASCII pieces of a non-ASCII
    document skip the encoding.  Lone surrogates count as the 3 bytes they would take."""
    return len(piece) if piece.isascii() else len(piece.encode("utf-8", "surrogatepass"))


def _chars_within(encoded: bytes, budget: int) -> int:
    """How many whole characters of ``encoded`` fit in its first ``budget`` bytes."""
    for back in range(4):
        try:
            return len(encoded[: budget - back].decode("utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            continue
    return 0


def _plan(
    starts: list[int],
    ends: list[int],
    levels: list[int],
    breaks: list[int],
    inner_breaks: list[int],
    chunk_size: int,
    min_chunk_size: int,
    overlap: int,
) -> list[tuple[int, int]]:
    """Choose chunks as ranges of atom indices ``(first, last)``, minimising the total cost.

    ``starts``/``ends`` are atom byte offsets; ``levels[i]`` and ``breaks[i]`` describe the
    boundary before atom ``i`` (``levels[m]``/``breaks[m]`` the end of the text);
    ``inner_breaks[i]`` is the line-break level inside atom ``i``.

    ``best[p]`` is the cheapest plan covering atoms ``0..p-1`` whose last chunk ends with atom
    ``p-1``.  A chunk ``i..j`` follows either a plan ending with atom ``i-1`` (no overlap) or
    one ending with some atom ``q`` in ``i..j-1`` whose end lies at most ``overlap`` bytes
    after the start of atom ``i`` (overlap).  ``entry[i]`` is the cheapest way to have
    everything before atom ``i`` covered, plus the chunk's fixed cost: it changes only when a
    new ``best`` is known, so it is updated then, which keeps the inner loop small.  The loop
    looks back over the atoms that fit in one chunk, a bounded number since atoms are packed.
    """
    m = len(starts)
    inf = float("inf")
    best = [0.0] * (m + 1)
    chunk_first = [0] * (m + 1)
    previous = [0] * (m + 1)
    miss = _OVERLAP_MISS_COST if overlap else 0.0
    per_overlap_byte = _OVERLAP_MISS_COST / overlap if overlap else 0.0
    entry = [inf] * m
    entry_previous = [0] * m
    entry[0] = _CHUNK_COST + miss
    no_level = _NO_LEVEL
    too_small = _TOO_SMALL_COST
    break_cost = _LINE_BREAK_GAP_COST

    def scan(
        i: int,
        lowest: int,
        inner_level: int,
        inner_break: int,
        end: int,
        end_level: int,
        end_break: int,
        limit: int,
        small: int,
    ) -> tuple[float, int]:
        """The cheapest chunk ending at atom j (whose end, level and break are given) among
        those starting at atoms ``i, i-1, ... lowest`` that fit; ``inner_*`` describe the
        boundaries inside chunk ``i..j``."""
        best_cost = inf
        best_first = i
        while True:
            start = starts[i]
            level = levels[i]
            brk = breaks[i]
            cost = entry[i]
            if start > small:
                cost += too_small
            if inner_level != no_level:
                if level > inner_level:
                    d = level - inner_level
                    cost += 200.0 + 100.0 * (d if d < 11 else 11)
                if end_level > inner_level:
                    d = end_level - inner_level
                    cost += 200.0 + 100.0 * (d if d < 11 else 11)
            if inner_break > brk:
                cost += break_cost * (inner_break - brk)
            if inner_break > end_break:
                cost += break_cost * (inner_break - end_break)
            if cost < best_cost:
                best_cost = cost
                best_first = i
            if i <= lowest:
                break
            i -= 1
            if starts[i] < limit:
                break
            if level < inner_level:
                inner_level = level
            if brk > inner_break:
                inner_break = brk
            if inner_breaks[i] > inner_break:
                inner_break = inner_breaks[i]
        return best_cost, best_first

    for j in range(m):
        end = ends[j]
        end_level = levels[j + 1]
        end_break = breaks[j + 1]
        limit = end - chunk_size
        small = end - min_chunk_size
        inner_level = no_level
        inner_break = inner_breaks[j]
        # Chunks smaller than min_chunk_size cost at least `too_small`: they can only win when
        # no larger chunk costs less than that, so at first they are only folded into the
        # boundary statistics, and scored only in that (rare) case.
        i = j
        while i > 0 and starts[i] > small and starts[i - 1] >= limit:
            if levels[i] < inner_level:
                inner_level = levels[i]
            if breaks[i] > inner_break:
                inner_break = breaks[i]
            i -= 1
            if inner_breaks[i] > inner_break:
                inner_break = inner_breaks[i]
        best_cost, best_first = scan(
            i, 0, inner_level, inner_break, end, end_level, end_break, limit, small
        )
        if best_cost >= too_small and i < j:
            small_cost, small_first = scan(
                j, i + 1, no_level, inner_breaks[j], end, end_level, end_break, limit, small
            )
            if small_cost < best_cost:
                best_cost, best_first = small_cost, small_first
        best[j + 1] = best_cost
        chunk_first[j + 1] = best_first
        previous[j + 1] = entry_previous[best_first]
        if j + 1 < m:
            entry[j + 1] = best_cost + _CHUNK_COST + miss
            entry_previous[j + 1] = j + 1
        if overlap:
            # A plan ending with atom j may now precede a chunk starting at any atom i <= j
            # that begins at most `overlap` bytes before atom j ends; the more overlap, the
            # smaller the missing-overlap cost.
            base = best_cost + _CHUNK_COST + miss - per_overlap_byte * end
            floor = end - overlap
            i = j
            while i >= 0:
                start = starts[i]
                if start < floor:
                    break
                cost = base + per_overlap_byte * start
                if cost < entry[i]:
                    entry[i] = cost
                    entry_previous[i] = j + 1
                i -= 1
    plan: list[tuple[int, int]] = []
    p = m
    while p > 0:
        plan.append((chunk_first[p], p - 1))
        p = previous[p]
    plan.reverse()
    return plan


def _positions(text: str, offsets: list[int]) -> dict[int, TextPosition]:
    """Line and column of each offset, in one forward sweep over the text."""
    result: dict[int, TextPosition] = {}
    line = 1
    line_start = 0
    prev = 0
    for offset in sorted(set(offsets)):
        newlines = text.count("\n", prev, offset)
        if newlines:
            line += newlines
            line_start = text.rfind("\n", prev, offset) + 1
        result[offset] = TextPosition(offset, line, offset - line_start + 1)
        prev = offset
    return result


def _check_size(name: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"SplitRecursively: {name} must not be negative, got {value}")


class RecursiveSplitter:
    """The executor behind ``SplitRecursively``: built once per spec, then ``split`` per row.

    ``split`` keeps no state between calls, so one splitter may serve several threads.
    """

    def __init__(self, custom_languages: Sequence[CustomLanguage] = ()) -> None:
        self._custom: dict[str, tuple[_Level, ...]] = {}
        for language in custom_languages:
            levels = []
            for pattern in language.separators_regex:
                try:
                    levels.append(_regex_level(pattern))
                except re.error as exc:
                    raise ValueError(
                        f"SplitRecursively: invalid separator regex {pattern!r} for custom "
                        f"language {language.language_name!r}: {exc}"
                    ) from exc
            for name in (language.language_name, *language.aliases):
                key = name.lower()
                if key in self._custom:
                    raise ValueError(
                        f"SplitRecursively: duplicate custom language name or alias {name!r}"
                    )
                self._custom[key] = tuple(levels)

    def split(
        self,
        text: str,
        chunk_size: int,
        min_chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        language: str | None = None,
    ) -> list[Chunk]:
        """Split ``text`` into chunks of at most ``chunk_size`` UTF-8 bytes.

        ``min_chunk_size`` defaults to ``chunk_size // 2``; ``chunk_overlap`` defaults to 0 and
        is capped at ``min_chunk_size``.  ``language`` is a custom language's name or alias, a
        built-in language's name, alias or extension, or ``None``; unknown means plain text.
        A chunk exceeds ``chunk_size`` only when ``chunk_size`` is smaller than one character.
        """
        if chunk_size <= 0:
            raise ValueError(f"SplitRecursively: chunk_size must be positive, got {chunk_size}")
        _check_size("min_chunk_size", min_chunk_size)
        _check_size("chunk_overlap", chunk_overlap)
        min_size = chunk_size // 2 if min_chunk_size is None else min_chunk_size
        overlap = min(chunk_overlap or 0, min_size)

        start, end = _trimmed_bounds(text)
        if start == end:
            return []
        if end - start <= chunk_size and (
            text.isascii() or _utf8_len(text[start:end]) <= chunk_size
        ):
            return _make_chunks(text, [(start, end)])

        # Pieces up to the atom size are not split further, and small neighbours are packed up
        # to it.  Overlap needs atoms no larger than the overlap; without it, v0 stops at
        # min_chunk_size, but packed atoms that coarse often leave no way to reach
        # min_chunk_size, so a quarter chunk is the most.  The floor of an eighth of a chunk
        # bounds the atoms per chunk, and so the merge's work.
        atom_size = overlap if overlap > 0 else min_size
        atom_size = max(min(atom_size, chunk_size // 4), chunk_size // 8, 1)
        atoms = _Atoms(text, atom_size)
        self._collect(atoms, text, language)
        return self._merge(atoms, chunk_size, min_size, overlap)

    def _collect(self, atoms: _Atoms, text: str, language: str | None) -> None:
        """Fill ``atoms`` using the hierarchy ``language`` resolves to."""
        custom = self._custom.get("" if language is None else language.lower())
        if custom is not None:
            atoms.piece(0, len(text), custom, 1)
            return
        info = resolve_language(language) if language is not None else None
        if info is None or not info.has_syntax_splitting:
            atoms.piece(0, len(text), _PLAIN_LEVELS, 1)
            return
        if info.name == "markdown":
            atoms.piece(0, len(text), _markdown_levels(text), 1)
            return
        grammar = load_tree_sitter_language(info)
        if grammar is not None:
            try:
                encoded = text.encode("utf-8")
                tree = _parse(grammar, encoded)
                atoms.tree(tree.root_node, encoded)
                return
            except Exception:
                # Bad syntax never raises: tree-sitter gives error nodes, and anything else
                # going wrong with the tree (encoding, a grammar crash) means plain text.
                atoms.starts.clear()
                atoms.ends.clear()
                atoms.levels.clear()
                atoms.pending = 0
        atoms.piece(0, len(text), _PLAIN_LEVELS, 1)

    @staticmethod
    def _merge(atoms: _Atoms, chunk_size: int, min_size: int, overlap: int) -> list[Chunk]:
        """Compute the atoms' byte offsets and line-break levels, plan, and build chunks."""
        text = atoms.text
        char_starts, char_ends = atoms.starts, atoms.ends
        m = len(char_starts)
        if m == 0:
            return []
        levels = [*atoms.levels, 0]
        levels[0] = 0
        breaks = [2] * (m + 1)
        inner_breaks = [0] * m
        prev_end = 0
        for k in range(m):
            s, e = char_starts[k], char_ends[k]
            if k:
                newlines = text.count("\n", prev_end, s)
                breaks[k] = 2 if newlines > 1 else newlines
            if text.find("\n", s, e) >= 0:
                inner_breaks[k] = 2 if text.find("\n\n", s, e) >= 0 else 1
            prev_end = e
        if atoms.ascii:
            byte_starts, byte_ends = char_starts, char_ends
        else:
            byte_starts = [0] * m
            byte_ends = [0] * m
            byte_pos = 0
            prev_end = 0
            for k in range(m):
                s, e = char_starts[k], char_ends[k]
                byte_pos += _utf8_len(text[prev_end:s])
                byte_starts[k] = byte_pos
                byte_pos += _utf8_len(text[s:e])
                byte_ends[k] = byte_pos
                prev_end = e
        plan = _plan(
            byte_starts,
            byte_ends,
            levels,
            breaks,
            inner_breaks,
            chunk_size,
            min_size,
            overlap,
        )
        return _make_chunks(text, [(char_starts[i], char_ends[j]) for i, j in plan])


def _parse(grammar: Any, encoded: bytes) -> Any:
    """Parse with tree-sitter under a work budget proportional to the input.

    Error recovery on pathological input (a megabyte of nested brackets, long invalid code)
    can take seconds and gigabytes; the parser's progress callback runs every fixed number of
    parser operations, so counting its calls bounds the work *deterministically* (the same
    text always gets the same result, unlike a wall-clock timeout).  Over budget, the parse is
    cancelled, which raises, and the caller falls back to plain text.  Real Python, C and JSON
    files (measured on a few thousand) use at most about half of the budget.
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


def _trimmed_bounds(text: str) -> tuple[int, int]:
    left = text.lstrip()
    if not left:
        return 0, 0
    start = len(text) - len(left)
    return start, start + len(left.rstrip())


def _make_chunks(text: str, spans: list[tuple[int, int]]) -> list[Chunk]:
    positions = _positions(text, [offset for span in spans for offset in span])
    return [
        Chunk(location=(s, e), text=text[s:e], start=positions[s], end=positions[e])
        for s, e in spans
    ]
