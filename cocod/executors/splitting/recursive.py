"""`RecursiveSplitter`: the executor behind ``SplitRecursively``, with v0's rules.

The split has two phases (see ``atoms`` and ``merging``): cut the text into atoms along its
syntax tree or separator levels, then choose chunks of consecutive atoms by a cost model.
Sizes are UTF-8 bytes, as in v0; the output's offsets are *character* (code point) offsets,
as v0's code emits (its docs say "byte offset", its code does not).  A chunk ends at the end
of its last atom (trailing whitespace trimmed) and starts at its first atom, which begins at
the start of its line when a line break precedes it: a chunk keeps its first line's
indentation, as in v0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..languages import resolve_language
from .atoms import collect_atoms
from .merging import merge
from .separators import DEFAULT_SEPARATORS, CustomLanguage, custom_table
from .syntax import SyntaxTree, parse
from .text import Text, TextPosition, positions

__all__ = ["Chunk", "RecursiveSplitter", "Span"]

Span = tuple[int, int, int, int, int, int]
"""A chunk as ``(start, end, start_line, start_column, end_line, end_column)``."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One output row: ``text == original[location[0]:location[1]]`` (character offsets)."""

    location: tuple[int, int]
    text: str
    start: TextPosition
    end: TextPosition


def _check_size(name: str, value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"SplitRecursively: {name} must not be negative, got {value}")


class RecursiveSplitter:
    """Built once per spec (custom languages compiled), then ``split`` per row.

    ``split`` keeps no state between calls, so one splitter may serve several threads.
    """

    def __init__(self, custom_languages: Sequence[CustomLanguage] = ()) -> None:
        self._custom = custom_table(custom_languages)

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
        return [
            Chunk(
                location=(start, end),
                text=text[start:end],
                start=TextPosition(start, start_line, start_column),
                end=TextPosition(end, end_line, end_column),
            )
            for start, end, start_line, start_column, end_line, end_column in self.split_spans(
                text, chunk_size, min_chunk_size, chunk_overlap, language
            )
        ]

    def split_spans(
        self,
        text: str,
        chunk_size: int,
        min_chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        language: str | None = None,
    ) -> list[Span]:
        """``split``'s chunks as plain tuples of ints: ``(start, end, start_line,
        start_column, end_line, end_column)``, character offsets, 1-based lines and
        columns.  Tuples of ints are what a split in another process sends back cheaply
        (see ``processes``); the caller slices the text itself."""
        if chunk_size <= 0:
            raise ValueError(f"SplitRecursively: chunk_size must be positive, got {chunk_size}")
        _check_size("min_chunk_size", min_chunk_size)
        _check_size("chunk_overlap", chunk_overlap)
        min_size = chunk_size // 2 if min_chunk_size is None else min_chunk_size
        overlap = min(chunk_overlap or 0, min_size)
        atom_size = overlap if overlap > 0 else min_size

        doc = Text(text)
        separators = self._custom.get("" if language is None else language.lower())
        tree: SyntaxTree | None = None
        if separators is None:
            separators = DEFAULT_SEPARATORS
            info = resolve_language(language) if language else None
            if info is not None and info.has_syntax_splitting and doc.nbytes > atom_size:
                tree = parse(info, doc.encoded)
        atoms = collect_atoms(doc, tree, separators, atom_size, chunk_size)
        spans = merge(atoms, chunk_size, min_size, overlap)
        where = positions(doc, [offset for span in spans for offset in span])
        out: list[Span] = []
        for start, end in spans:
            first, last = where[start], where[end]
            out.append(
                (first.offset, last.offset, first.line, first.column, last.line, last.column)
            )
        return out
