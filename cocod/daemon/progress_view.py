"""What ``cocod status`` shows of a pass in progress: "catching up 1,234 / 10,000 files".

Each daemon instance owns an :class:`InstanceProgress`, the :class:`ProgressSink` its live
updater's passes report to (and ``cocod update``'s pass, when the control handler sets it
around that call). It keeps, per source, the :class:`PassProgress` of the pass running now
or of the last one, so ``status`` can answer from memory while an hour-long first index
runs. :func:`progress_line` renders one line for people; the JSON fields are
``PassProgress.as_dict()``.
"""

from __future__ import annotations

import time
from typing import Any

from cocod.engine.progress import PassProgress

SMALL_PASS_CANDIDATES = 20
"""Hint passes of a few files come and go within a second: not worth a status line."""


class InstanceProgress:
    """The current (or last) pass of each of an instance's sources; called on the loop."""

    def __init__(self) -> None:
        self._by_source: dict[str, PassProgress] = {}
        self.rows_written = 0
        """Target rows written by finished passes (chunks), for metrics."""
        self._counted: dict[str, int] = {}  # source → id of the finished pass counted

    def on_progress(self, progress: PassProgress) -> None:
        # The previous pass's object is still referenced here when a new one reports, so
        # their ids differ.
        self._by_source[progress.source] = progress
        if progress.finished and self._counted.get(progress.source) != id(progress):
            self._counted[progress.source] = id(progress)
            self.rows_written += progress.chunks

    def current(self) -> PassProgress | None:
        """The running pass with the most work left, else the most recent pass."""
        passes = list(self._by_source.values())
        running = [p for p in passes if not p.finished]
        if running:
            return max(running, key=_left)
        return max(passes, key=lambda p: p.started_at, default=None)

    def running(self) -> PassProgress | None:
        current = self.current()
        return current if current is not None and not current.finished else None


def _left(progress: PassProgress) -> int:
    if progress.candidates is None:
        return 1 << 62  # still listing: it may be the big one
    return max(0, progress.candidates - progress.processed)


def progress_line(progress: PassProgress | None, now: float | None = None) -> str | None:
    """``"catching up 1,234 / 10,000 files, ETA 5 min"``; None when no big pass runs."""
    if progress is None or progress.finished:
        return None
    now = time.monotonic() if now is None else now
    if progress.candidates is None:
        listed = "" if progress.listed is None else f" ({progress.listed:,} so far)"
        return f"listing files{listed}"
    if progress.candidates < SMALL_PASS_CANDIDATES and progress.processed == 0:
        return None
    line = f"catching up {progress.processed:,} / {progress.candidates:,} files"
    eta = progress.eta_s(now)
    if eta is not None:
        line += f", ETA {format_duration(eta)}"
    return line


def format_duration(seconds: float) -> str:
    """A rough duration for people: ``"40 s"``, ``"5 min"``, ``"1 h 20 min"``."""
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


def status_fields(progress: InstanceProgress, paused: bool) -> dict[str, Any]:
    """The fields ``status`` adds per instance: ``paused``, ``progress``, ``progress_line``."""
    current = progress.current()
    return {
        "paused": paused,
        "progress": None if current is None else current.as_dict(),
        "progress_line": None if paused else progress_line(current),
    }
