"""Stream a command's pass progress to its client as ``progress`` events, rate-limited.

The engine reports progress synchronously, on the event loop, as often as rows finish
(:mod:`cocod.engine.progress`); a socket write is an await and a slow client must not
slow the pass. So the sink only records the latest state per source and wakes a
forwarder task, which sends at most one event per :data:`MIN_INTERVAL_SECONDS` per
source, and the final state of every source once the pass is over. A client that went
away ends the forwarding, never the update.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from cocod.daemon.server import Emit
from cocod.engine.progress import PassProgress, ProgressSink, reporting_to

MIN_INTERVAL_SECONDS = 0.2
"""At most five events a second: enough for a smooth bar, little for the socket."""


class ProgressForwarder:
    """A :class:`~cocod.engine.progress.ProgressSink` that turns passes into events."""

    def __init__(
        self,
        emit: Emit,
        name: str,
        also: ProgressSink | None = None,
        interval: float = MIN_INTERVAL_SECONDS,
    ) -> None:
        self._emit = emit
        self._name = name
        self._also = also
        """Another sink that sees every report (the instance's, so ``status`` shows the
        progress of a ``cocod update`` while it runs)."""
        self._interval = interval
        self._pending: dict[str, dict[str, Any]] = {}
        self._changed = anyio.Event()
        self._is_broken = False

    def on_progress(self, progress: PassProgress) -> None:
        if self._also is not None:
            self._also.on_progress(progress)
        self._pending[progress.source] = progress.as_dict()
        self._changed.set()

    async def _send_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for state in pending.values():
            if self._is_broken:
                return
            try:
                await self._emit(
                    {"event": "progress", "stage": "update", "name": self._name, **state}
                )
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                self._is_broken = True  # the client left; the update goes on

    async def _forward(self) -> None:
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            await self._send_pending()
            await anyio.sleep(self._interval)

    @asynccontextmanager
    async def reporting(self) -> AsyncIterator[None]:
        """Passes started inside report here; the last states are sent on the way out."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._forward)
            try:
                with reporting_to(self):
                    yield
            finally:
                tg.cancel_scope.cancel()
        with anyio.move_on_after(5.0, shield=True):  # a deadline on the last send
            await self._send_pending()
