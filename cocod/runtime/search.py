"""Search across flow instances: one query text, many vector indexes, one ranked list.

Each instance's hits come from its own export and its own embedding function
(:mod:`cocod.runtime.query`); instances whose embedding functions are identical (the
same model and arguments) share one embedding of the query text, and the model itself is
loaded once per process whichever instance asks first.

Scores are merged only when they mean the same thing: every searched instance must use
the same similarity metric (cosine similarity and inner product rank higher-is-better,
L2 distance lower-is-better, and their magnitudes are not on a common scale). A search
that would mix metrics is refused with the instances of each metric named, so the
caller can search them separately; nothing is silently rescaled.

A hit carries ``filename``, ``start_line`` and ``end_line`` (1-based, inclusive) and its
``text``. Tables of the built-in flows store ``start_line``/``end_line``; for any other
table they are derived here, from the hit's file as it is now: by its ``location``
(character offsets, as SplitRecursively reports them) when the text there is still the
chunk's, else by finding the chunk's text in the file. A file that changed so the chunk
is no longer in it gets no line range (``null``) rather than a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cocod.errors import RowError, SourceError
from cocod.flow.index import VectorSimilarityMetric
from cocod.runtime.context import LibraryContext
from cocod.runtime.execution import FlowExecution
from cocod.runtime.query import VectorTarget, embed_query, nearest_rows, resolve_vector_target

__all__ = ["MixedMetrics", "SearchSession", "line_range"]

STANDARD_FIELDS = ("filename", "start_line", "end_line", "text")
"""Columns a hit shows at its top level; the others go under ``fields``."""


@dataclass(frozen=True)
class MixedMetrics:
    """The searched instances grouped by metric, when there is more than one."""

    by_metric: dict[str, list[str]]

    def describe(self) -> str:
        groups = "; ".join(f"{m}: {', '.join(names)}" for m, names in self.by_metric.items())
        return (
            "cannot merge scores of different similarity metrics "
            f"({groups}); search the instances of one metric at a time with --instance"
        )


@dataclass
class SearchSession:
    """One search: add each instance's execution in turn, then take the merged hits."""

    ctx: LibraryContext
    text: str
    top_k: int
    metrics: dict[str, VectorSimilarityMetric] = field(default_factory=dict)
    _rows: list[tuple[str, VectorTarget, dict[str, Any]]] = field(default_factory=list)
    _vectors: dict[str, Any] = field(default_factory=dict)

    async def add(self, instance: str, execution: FlowExecution) -> int:
        """Search one instance; returns how many hits it gave. Raises FlowDefinitionError
        (no vector index), SetupOutOfDateError (no table yet) or a database error."""
        target = resolve_vector_target(execution)
        key = target.embedder_identity
        vector = self._vectors.get(key)
        if vector is None:
            vector = self._vectors[key] = await embed_query(target, self.ctx, self.text)
        rows = await nearest_rows(target, self.ctx, vector, self.top_k)
        self.metrics[instance] = target.metric
        self._rows.extend((instance, target, row) for row in rows)
        return len(rows)

    def mixed_metrics(self) -> MixedMetrics | None:
        by_metric: dict[str, list[str]] = {}
        for name, metric in self.metrics.items():
            by_metric.setdefault(metric.name.lower(), []).append(name)
        return MixedMetrics(by_metric) if len(by_metric) > 1 else None

    def metric(self) -> VectorSimilarityMetric | None:
        return next(iter(self.metrics.values()), None)

    async def merged(self) -> list[dict[str, Any]]:
        """The best ``top_k`` hits of all instances (check :meth:`mixed_metrics` first).

        Line ranges are derived only for these, so a search's file reads are bounded by
        ``top_k`` (each file read once), not by ``top_k`` times the instances searched.
        """
        is_distance = self.metric() is VectorSimilarityMetric.L2_DISTANCE
        ranked = sorted(
            self._rows,
            key=lambda r: (r[2]["score"] if is_distance else -r[2]["score"], r[0]),
        )
        files: dict[tuple[str, str], str | None] = {}
        return [await _hit(i, target, row, files) for i, target, row in ranked[: self.top_k]]


async def _hit(
    instance: str,
    target: VectorTarget,
    row: dict[str, Any],
    files: dict[tuple[str, str], str | None],
) -> dict[str, Any]:
    hit: dict[str, Any] = {"instance": instance, "score": row["score"]}
    for name in STANDARD_FIELDS:
        hit[name] = row.get(name)
    hit["fields"] = {k: v for k, v in row.items() if k not in STANDARD_FIELDS and k != "score"}
    if _is_line(hit["start_line"]) and _is_line(hit["end_line"]):
        return hit
    hit["start_line"] = hit["end_line"] = None
    filename, text = hit["filename"], hit["text"]
    if not isinstance(filename, str) or not isinstance(text, str) or not text:
        return hit
    if (instance, filename) not in files:
        files[instance, filename] = await _read_text(target, filename)
    content = files[instance, filename]
    if content is not None:
        lines = line_range(content, text, row.get("location"))
        if lines is not None:
            hit["start_line"], hit["end_line"] = lines
    return hit


def _is_line(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


async def _read_text(target: VectorTarget, filename: str) -> str | None:
    """The file's text as the source reads it now (in a worker thread, size-capped,
    never leaving the source root), or None if it is gone, excluded or not text."""
    reader = target.reader_for_rows()
    if reader is None or reader.spec.binary:
        return None
    try:
        row = await reader.read_row(filename)
    except (RowError, SourceError):  # too big, not UTF-8, unreadable, root gone: no lines
        return None
    if row is None:
        return None
    content = row.value.get("content")
    return content if isinstance(content, str) else None


def line_range(content: str, text: str, location: Any = None) -> tuple[int, int] | None:
    """1-based first and last line of ``text`` in ``content``: at ``location`` (character
    offsets ``[start, end)``) when the text is still there, else at its first occurrence;
    None when it is not in the file any more."""
    start: int | None = None
    if (
        isinstance(location, list | tuple)
        and len(location) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in location)
    ):
        lo, hi = location
        if 0 <= lo <= hi <= len(content) and content[lo:hi] == text:
            start = lo
    if start is None:
        found = content.find(text)
        if found < 0:
            return None
        start = found
    end = start + len(text)
    first = content.count("\n", 0, start) + 1
    last = first + content.count("\n", start, max(start, end - 1))
    return first, last
