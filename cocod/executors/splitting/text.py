"""The text being split, seen both as characters and as UTF-8 bytes.

CocoIndex v0 measures every size and keeps every offset in UTF-8 bytes (Rust strings), and
only reports character offsets at the end.  The splitter does the same: all its offsets are
byte offsets into the UTF-8 text, and this module converts them to and from character
offsets (Python's ``re`` works on ``str``) in time independent of the text's length: a
checkpoint every ``_STEP`` characters, and a short encode or decode from there.  An ASCII text
(the common case) needs no conversion at all.

Whitespace is Rust's (the Unicode ``White_Space`` property, what ``str::trim`` strips), not
Python's ``str.isspace`` (which adds the four information separators ``\\x1c``-``\\x1f``).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

__all__ = [
    "WHITESPACE",
    "WHITESPACE_CLASS",
    "LineBreak",
    "Text",
    "TextPosition",
    "line_break_level",
    "positions",
]

# Unicode White_Space, as Rust's `char::is_whitespace` (and `str::trim`) has it.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# The same set as a regex character class, to write Rust's `\s` for Python's `re`.
WHITESPACE_CLASS = (
    "[\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
)
_INLINE_SPACE = " \t"
_STEP = 256


class LineBreak:
    """Line-break levels of a stretch of text, ordered: none, one line break, a blank line."""

    INLINE = 0
    NEWLINE = 1
    DOUBLE = 2


_NEWLINE_RUN = re.compile(r"[\r\n]+")


def line_break_level(piece: str) -> int:
    """v0's line-break level of ``piece``: DOUBLE when a run of line-break characters repeats
    its first character (``"\\n\\n"``, ``"\\r\\n\\r\\n"``; not ``"\\r\\n\\n"``, not
    ``"\\n \\n"``), NEWLINE when it has any ``\\n`` or ``\\r``, else INLINE."""
    if "\r" not in piece:
        # Runs of "\n" only (the usual text): a run repeats its first character when it
        # is two or more long.
        if "\n" not in piece:
            return LineBreak.INLINE
        return LineBreak.DOUBLE if "\n\n" in piece else LineBreak.NEWLINE
    for m in _NEWLINE_RUN.finditer(piece):
        run = m.group()
        if run[0] in run[1:]:
            return LineBreak.DOUBLE
    return LineBreak.NEWLINE


@dataclass(frozen=True, slots=True)
class TextPosition:
    """A position in the original text: character offset, 1-based line and column."""

    offset: int
    line: int
    column: int


class Text:
    """A document as ``str`` and UTF-8 ``bytes``, with byte <-> character offset conversion.

    Offsets passed in must lie on character boundaries (they always come from a regex match,
    a syntax node or a previous conversion).
    """

    __slots__ = ("_byte_marks", "encoded", "is_ascii", "nbytes", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.is_ascii = text.isascii()
        # Lone surrogates (possible in a Python str, never in a Rust one) are kept as is.
        self.encoded = text.encode("utf-8", "surrogatepass")
        self.nbytes = len(self.encoded)
        self._byte_marks: list[int] = []
        if not self.is_ascii:
            marks = [0]
            pos = 0
            for k in range(0, len(text) - _STEP, _STEP):
                pos += _utf8_len(text[k : k + _STEP])
                marks.append(pos)
            self._byte_marks = marks

    def to_char(self, byte_offset: int) -> int:
        if self.is_ascii:
            return byte_offset
        k = bisect.bisect_right(self._byte_marks, byte_offset) - 1
        mark = self._byte_marks[k]
        if mark == byte_offset:
            return k * _STEP
        return k * _STEP + len(self.encoded[mark:byte_offset].decode("utf-8", "surrogatepass"))

    def to_byte(self, char_offset: int) -> int:
        if self.is_ascii:
            return char_offset
        k = char_offset // _STEP
        if k >= len(self._byte_marks):
            k = len(self._byte_marks) - 1
        return self._byte_marks[k] + _utf8_len(self.text[k * _STEP : char_offset])

    def slice(self, start: int, end: int) -> str:
        """The text between two byte offsets."""
        if self.is_ascii:
            return self.text[start:end]
        return self.encoded[start:end].decode("utf-8", "surrogatepass")

    def trim(self, start: int, end: int) -> tuple[int, int]:
        """``[start, end)`` without leading and trailing whitespace; ``(start, start)`` when it
        is all whitespace."""
        piece = self.slice(start, end)
        right = piece.rstrip(WHITESPACE)
        if not right:
            return start, start
        both = right.lstrip(WHITESPACE)
        if self.is_ascii:
            new_start = start + len(right) - len(both)
            return new_start, new_start + len(both)
        new_start = start + _utf8_len(right[: len(right) - len(both)])
        return new_start, new_start + _utf8_len(both)

    def line_start(self, prev_end: int, start: int) -> tuple[int, int]:
        """v0's alignment of an atom to the beginning of its line: the line-break level of the
        gap ``[prev_end, start)`` and, when it has a line break, the atom's new start (before
        the spaces and tabs that end the gap)."""
        gap = self.slice(prev_end, start)
        level = line_break_level(gap)
        if level == LineBreak.INLINE:
            return level, start
        kept = gap.rstrip(_INLINE_SPACE)
        return level, start - (len(gap) - len(kept))  # spaces and tabs are one byte each


def _utf8_len(piece: str) -> int:
    return len(piece) if piece.isascii() else len(piece.encode("utf-8", "surrogatepass"))


def positions(text: Text, byte_offsets: list[int]) -> dict[int, TextPosition]:
    """Character offset, line and column of each byte offset, in one forward sweep (lines
    are counted at ``\\n`` only, as v0 does)."""
    result: dict[int, TextPosition] = {}
    s = text.text
    line = 1
    line_start = 0
    prev = 0
    for byte_offset in sorted(set(byte_offsets)):
        offset = text.to_char(byte_offset)
        newlines = s.count("\n", prev, offset)
        if newlines:
            line += newlines
            line_start = s.rfind("\n", prev, offset) + 1
        result[byte_offset] = TextPosition(offset, line, offset - line_start + 1)
        prev = offset
    return result
