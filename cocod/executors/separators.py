"""``SplitBySeparators``: chunks between regex separators, with v0's exact rules.

v0 (``ops_text/src/split/by_separators.rs``) OR-joins the patterns into one multi-line regex
``(?m)(?:p1)|(?:p2)…`` and walks its matches left to right. With ``keep_separator="LEFT"``
a chunk ends after its separator; with ``"RIGHT"`` the next chunk starts at it; otherwise
separators are dropped. ``trim`` strips ASCII whitespace (space, tab, LF, FF, CR; not the
vertical tab, as Rust's ``is_ascii_whitespace``) from both ends of each chunk, and a chunk
left empty is dropped unless ``include_empty``. With no separators the whole text is one
chunk. Rows are SplitRecursively's (``location``, ``text``, ``start``, ``end``), so the two
functions are interchangeable in a flow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cocod.errors import FlowDefinitionError
from cocod.flow.specs import AnalyzedFunction, ArgSchema, FunctionExecutor, OpOptions, spec_to_json
from cocod.flow.types import table
from cocod.ops.functions import SplitBySeparators

_ASCII_WHITESPACE = " \t\n\x0c\r"
_KEEP = ("NONE", "LEFT", "RIGHT")


@dataclass(frozen=True)
class SeparatorSplitter:
    """Compiled once per executor; ``split`` is pure and thread-safe."""

    pattern: re.Pattern[str] | None
    keep_separator: str
    include_empty: bool
    trim: bool

    @classmethod
    def create(cls, spec: SplitBySeparators) -> SeparatorSplitter:
        keep = str(spec.keep_separator or "NONE").upper()  # None (v0's Rust side) = "NONE"
        if keep not in _KEEP:
            raise FlowDefinitionError(
                f"SplitBySeparators: keep_separator must be one of {', '.join(_KEEP)}, "
                f"got {spec.keep_separator!r}"
            )
        pattern = None
        if spec.separators_regex:
            joined = "|".join(f"(?:{p})" for p in spec.separators_regex)
            try:
                pattern = re.compile(joined, re.MULTILINE)
            except re.error as e:
                raise FlowDefinitionError(
                    f"SplitBySeparators: separators_regex {spec.separators_regex!r} does not "
                    f"compile: {e}"
                ) from None
        return cls(pattern, keep, bool(spec.include_empty), bool(spec.trim))

    def spans(self, text: str) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []

        def add(start: int, end: int) -> None:
            if self.trim:
                while start < end and text[start] in _ASCII_WHITESPACE:
                    start += 1
                while end > start and text[end - 1] in _ASCII_WHITESPACE:
                    end -= 1
            if self.include_empty or end > start:
                out.append((start, end))

        if self.pattern is None:
            add(0, len(text))
            return out
        start = 0
        for m in self.pattern.finditer(text):
            add(start, m.end() if self.keep_separator == "LEFT" else m.start())
            start = m.start() if self.keep_separator == "RIGHT" else m.end()
        add(start, len(text))
        return out

    def split(self, text: str) -> list[dict[str, Any]]:
        spans = self.spans(text)
        positions = _positions(text, [o for span in spans for o in span])
        return [
            {"location": (s, e), "text": text[s:e], "start": positions[s], "end": positions[e]}
            for s, e in spans
        ]


def _positions(text: str, offsets: list[int]) -> dict[int, dict[str, int]]:
    """Character offset, 1-based line and column of each offset, in one forward sweep."""
    result: dict[int, dict[str, int]] = {}
    line, line_start, prev = 1, 0, 0
    for offset in sorted(set(offsets)):
        newlines = text.count("\n", prev, offset)
        if newlines:
            line += newlines
            line_start = text.rfind("\n", prev, offset) + 1
        result[offset] = {"offset": offset, "line": line, "column": offset - line_start + 1}
        prev = offset
    return result


class SplitBySeparatorsDefinition:
    """Type-checks the call while the flow is defined; the regex is compiled then too."""

    def analyze(
        self, spec: Any, args: Sequence[ArgSchema], kwargs: Mapping[str, ArgSchema]
    ) -> AnalyzedFunction:
        from cocod.executors.functions import CHUNK_ROW, bind_arguments

        assert isinstance(spec, SplitBySeparators)

        def _sig(text: Any) -> None: ...

        bound = bind_arguments("SplitBySeparators", _sig, args, kwargs, {"text": ("Str",)})
        splitter = SeparatorSplitter.create(spec)
        output = table("KTable", CHUNK_ROW)
        if bound["text"].type.nullable:
            output = output.with_nullable()

        def create_executor() -> FunctionExecutor:
            return splitter.split

        return AnalyzedFunction(
            kind="SplitBySeparators",
            spec_json=spec_to_json(spec),
            output_type=output,
            options=OpOptions(),
            create_executor=create_executor,
            required_inputs=frozenset({0 if args else "text"}),
        )
