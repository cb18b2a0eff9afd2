"""Live progress of source passes, for progress bars, ``cocod status`` and metrics.

The engine reports to whatever :class:`ProgressSink` is current in the running context
(a :class:`contextvars.ContextVar`, so it follows the pass into the task groups it starts
without being threaded through every layer between the caller and the indexer). Callers
that want progress — the daemon's instances, the ``update`` command streaming events, the
library's ``Flow.update(progress=...)`` — set a sink around the call with
:func:`reporting_to`; with none set, reporting costs one context lookup per event.

Sinks are called on the event loop and must not block: they update counters or hand the
event to a stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

MARK_INTERVAL_S = 1.0
"""How often the rate's history keeps a point (the engine reports up to ten times as often)."""
MAX_MARKS = 512
"""History bound: when full, every other point goes, so the span is kept at half the detail."""
MIN_WINDOW_S = 30.0
"""The shortest stretch the recent rate is measured over: shorter ones follow single batches."""


@dataclass
class PassProgress:
    """Counters of one source pass, as it runs.

    The ETA divides the rows left by a rate measured from the first finished row, not
    from the pass's start: listing, the tracking diff and the model's first load (seconds
    to a minute on a laptop, all before any row finishes) are not work that the rows left
    will repeat, and counting them made the first estimates of an hour-long index tens of
    percent too long. The rate is taken over the recent half of the time since then (at
    least :data:`MIN_WINDOW_S`), so it follows the machine getting busier or quieter and
    later files costing more than early ones, while a stretch long enough to span many
    batches keeps it steady.
    """

    source: str
    started_at: float = field(default_factory=time.monotonic)
    listed: int | None = None
    """Rows found in the source, once the listing is done (``None`` while listing)."""
    candidates: int | None = None
    """Rows that need processing (new, changed or deleted); known with ``listed``."""
    processed: int = 0
    """Candidate rows finished (committed, deleted or failed)."""
    chunks: int = 0
    """Target rows written so far."""
    finished: bool = False
    _marks: list[tuple[float, int]] = field(default_factory=list, repr=False, compare=False)
    """(time, processed) history for the rate, from the first finished row on."""

    def note(self, now: float | None = None) -> None:
        """Keep a point of the rate's history; called on every report (cheap, bounded)."""
        if self.processed == 0:
            return
        now = time.monotonic() if now is None else now
        marks = self._marks
        if marks and (now - marks[-1][0] < MARK_INTERVAL_S or self.processed == marks[-1][1]):
            return
        marks.append((now, self.processed))
        if len(marks) > MAX_MARKS:
            del marks[1::2]  # keeps the first point, the rate's origin

    def rate(self, now: float | None = None) -> float:
        """Candidate rows per second, recently (see the class); the whole pass's average
        until the history spans a few seconds."""
        now = time.monotonic() if now is None else now
        whole = self.processed / (now - self.started_at) if now > self.started_at else 0.0
        if not self._marks or now - self._marks[0][0] < MARK_INTERVAL_S * 5:
            return whole
        t0, p0 = self._marks[0]
        span = now - t0
        since_first = (self.processed - p0) / span
        window = max(span / 2, min(span, MIN_WINDOW_S))
        tb, pb = t0, p0
        for t, p in reversed(self._marks):
            if now - t >= window:
                tb, pb = t, p
                break
        recent = (self.processed - pb) / (now - tb)
        return recent if recent > 0 else since_first

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left at the recent rate; ``None`` until there is a rate to go by."""
        if self.candidates is None or self.processed == 0:
            return None
        rate = self.rate(now)
        return max(0, self.candidates - self.processed) / rate if rate > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "listed": self.listed,
            "candidates": self.candidates,
            "processed": self.processed,
            "chunks": self.chunks,
            "rate": round(self.rate(), 2),
            "eta_s": None if (eta := self.eta_s()) is None else round(eta, 1),
            "finished": self.finished,
        }


class ProgressSink(Protocol):
    """Receives a pass's progress; the same :class:`PassProgress` object on every call."""

    def on_progress(self, progress: PassProgress) -> None: ...


_CURRENT: ContextVar[ProgressSink | None] = ContextVar("cocod_progress_sink", default=None)


def current_sink() -> ProgressSink | None:
    return _CURRENT.get()


@contextmanager
def reporting_to(sink: ProgressSink | None) -> Iterator[None]:
    """Make ``sink`` receive the progress of passes started inside this block."""
    token = _CURRENT.set(sink)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def report(progress: PassProgress) -> None:
    """Called by the engine whenever ``progress`` changed (listing done, rows finished)."""
    progress.note()
    sink = _CURRENT.get()
    if sink is not None:
        sink.on_progress(progress)
