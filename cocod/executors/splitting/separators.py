"""Separator levels: the regexes a piece of text is cut at, highest-level boundary first.

A separator level turns a byte range of the text into the pieces between its matches, as
v0's ``TextChunksIter`` does: the matched text belongs to no piece, empty pieces are kept
(they become nothing later), and a range without a match is one piece.

The built-in hierarchy is v0's, written for Python's ``re``: blank-line runs, line breaks,
sentence ends, clause punctuation, commas, any whitespace, where ``\\s`` is Rust's (Unicode
``White_Space``) rather than Python's.  A custom language's regexes are the user's, compiled by
``re``: Rust's ``regex`` syntax and Python's share the common subset (classes, repetition,
alternation, groups); they are matched on the range alone, as v0 does, so ``^`` and ``$``
anchor at the range's edges.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .text import WHITESPACE_CLASS, Text

__all__ = ["DEFAULT_SEPARATORS", "CustomLanguage", "SeparatorSet", "compile_custom"]

_S = WHITESPACE_CLASS


@dataclass(frozen=True)
class CustomLanguage:
    """A user-defined language: separators as regexes, highest-level boundary first.

    The regexes use Python's ``re`` syntax (v0 used Rust's ``regex``; the common subset is the
    same).  A match is a separator: the text it covers is left out at a chunk boundary.
    """

    language_name: str
    separators_regex: list[str]
    aliases: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SeparatorSet:
    """One language's separator regexes, and whether they may be matched in place (with
    ``pos``/``endpos``) instead of on a copy of the range: true for the built-in ones, which
    use no anchors or look-arounds."""

    patterns: tuple[re.Pattern[str], ...]
    in_place: bool = False

    def __len__(self) -> int:
        return len(self.patterns)

    def pieces(self, text: Text, start: int, end: int, index: int) -> Iterator[tuple[int, int]]:
        """The byte ranges between the matches of separator ``index`` in ``[start, end)``."""
        pattern = self.patterns[index]
        s = text.text
        c_start, c_end = text.to_char(start), text.to_char(end)
        if self.in_place:
            matches = pattern.finditer(s, c_start, c_end)
            shift = 0
        else:
            matches = pattern.finditer(s[c_start:c_end])
            shift = c_start
        to_byte = text.to_byte
        pos = start
        for m in matches:
            m_start, m_end = m.span()
            yield pos, to_byte(m_start + shift)
            pos = to_byte(m_end + shift)
        if pos < end:
            yield pos, end


DEFAULT_SEPARATORS = SeparatorSet(
    tuple(
        re.compile(p)
        for p in (
            r"\n\n+",
            r"\n",
            rf"[.?!]{_S}+|。|？|！",
            rf"[;:\-—]{_S}+|；|：|—+",
            rf",{_S}+|，",
            rf"{_S}+",
        )
    ),
    in_place=True,
)


def compile_custom(language: CustomLanguage) -> SeparatorSet:
    """Compile a custom language's separators; a bad regex names the language and pattern."""
    patterns = []
    for pattern in language.separators_regex:
        try:
            patterns.append(re.compile(pattern))
        except re.error as exc:
            raise ValueError(
                f"SplitRecursively: invalid separator regex {pattern!r} for custom language "
                f"{language.language_name!r}: {exc}"
            ) from exc
    return SeparatorSet(tuple(patterns))


def custom_table(languages: Sequence[CustomLanguage]) -> dict[str, SeparatorSet]:
    """Custom languages by lower-cased name and alias; a name used twice is an error."""
    table: dict[str, SeparatorSet] = {}
    for language in languages:
        separators = compile_custom(language)
        for name in (language.language_name, *language.aliases):
            key = name.lower()
            if key in table:
                raise ValueError(
                    f"SplitRecursively: duplicate custom language name or alias {name!r}"
                )
            table[key] = separators
    return table
