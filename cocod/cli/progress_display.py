"""Show ``cocod update``'s progress events: a bar on a terminal, plain lines elsewhere.

The daemon streams ``{"event": "progress", "source": ..., "listed": ..., "candidates":
..., "processed": ..., "chunks": ..., "rate": ..., "eta_s": ..., "finished": ...}``
(``PassProgress.as_dict()``, at most five a second). On a terminal (stderr is one) each
source gets a rich progress bar: files processed of those that need it, chunks written,
the rate and the daemon's ETA. Otherwise (a pipe, a log, journald) one plain line is
printed when the first counts arrive, then at most every :data:`PLAIN_INTERVAL_SECONDS`,
and a last one when the pass is done, so logs stay short and readable.

rich is imported only when a bar is drawn (and typing not at all): the CLI stays a thin,
fast client.
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

PLAIN_INTERVAL_SECONDS = 5.0
"""Between two plain progress lines (the first and the last are always printed)."""


def describe(event: dict[str, Any]) -> str:
    """``"docs: 120 / 1,000 files, 340 chunks, 12.5 files/s, ETA 1 min"``."""
    name = event.get("name") or event.get("source") or "update"
    candidates = event.get("candidates")
    processed = int(event.get("processed") or 0)
    if candidates is None:
        listed = event.get("listed")
        files = "listing files" + ("" if listed is None else f" ({listed:,} so far)")
    else:
        files = f"{processed:,} / {int(candidates):,} files"
    parts = [files, f"{int(event.get('chunks') or 0):,} chunks"]
    rate = event.get("rate")
    if isinstance(rate, int | float) and rate > 0:
        parts.append(f"{rate:,.1f} files/s")
    if event.get("finished"):
        parts.append("done")
    elif isinstance(event.get("eta_s"), int | float):
        parts.append(f"ETA {_duration(float(event['eta_s']))}")
    return f"{name}: " + ", ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(0, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class ProgressDisplay:
    """Feed it every event of one command (``on_event``); ``close()`` when it returns."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        is_terminal: bool | None = None,
        interval: float = PLAIN_INTERVAL_SECONDS,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.is_terminal = self.stream.isatty() if is_terminal is None else is_terminal
        self.interval = interval
        self._last_line_at: float | None = None
        self._last_event: dict[str, Any] | None = None
        self._printed: dict[str, Any] | None = None
        self._bar: Any = None  # rich.progress.Progress, created on the first counts
        self._tasks: dict[str, Any] = {}

    def on_event(self, event: dict[str, Any]) -> None:
        if "processed" not in event:
            return  # a stage announcement ("update docs…"): nothing to count yet
        if self.is_terminal:
            self._draw(event)
            return
        self._last_event = event
        now = time.monotonic()
        if (
            self._last_line_at is None
            or event.get("finished")
            or now - self._last_line_at >= self.interval
        ):
            self._print(event, now)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self._last_event is not None and self._last_event is not self._printed:
            self._print(self._last_event, time.monotonic())

    def _print(self, event: dict[str, Any], now: float) -> None:
        print(describe(event), file=self.stream, flush=True)
        self._last_line_at = now
        self._printed = event

    def _draw(self, event: dict[str, Any]) -> None:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("files  {task.fields[chunks]} chunks  {task.fields[rate]}"),
                TextColumn("{task.fields[eta]}"),
                console=Console(file=self.stream, force_terminal=True),
                auto_refresh=False,
            )
            self._bar.start()
        source = str(event.get("source") or "")
        candidates = event.get("candidates")
        fields = {
            "chunks": f"{int(event.get('chunks') or 0):,}",
            "rate": f"{float(event.get('rate') or 0):,.1f} files/s",
            "eta": "done"
            if event.get("finished")
            else ""
            if event.get("eta_s") is None
            else f"ETA {_duration(float(event['eta_s']))}",
        }
        task = self._tasks.get(source)
        if task is None:
            label = str(event.get("name") or "update")
            if source and source != label:
                label += f" {source}"
            task = self._tasks[source] = self._bar.add_task(label, total=candidates, **fields)
        self._bar.update(
            task, total=candidates, completed=int(event.get("processed") or 0), **fields
        )
        self._bar.refresh()
