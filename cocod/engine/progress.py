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


@dataclass
class PassProgress:
    """Counters of one source pass, as it runs."""

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

    def rate(self, now: float | None = None) -> float:
        """Candidate rows per second since the pass started."""
        elapsed = (time.monotonic() if now is None else now) - self.started_at
        return self.processed / elapsed if elapsed > 0 else 0.0

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left at the rate so far; ``None`` until there is a rate to go by."""
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
    sink = _CURRENT.get()
    if sink is not None:
        sink.on_progress(progress)
