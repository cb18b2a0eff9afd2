"""A gate that a live updater's passes wait on while the updater is paused.

Pausing is for a person who wants the CPU back (on battery, during a call) without losing
what changes meanwhile: the watcher keeps collecting hints, and no pass runs. A pass that
is running when the pause comes is cancelled rather than finished — a first index can take
an hour — which is safe because every source row commits in its own transaction: rows
committed stay, the rest are redone by the pass that runs on resume.

Waiting is an :class:`anyio.Event`, never a polling loop. The gate is used on the library
loop only; :class:`~cocod.runtime.live_updater.FlowLiveUpdater` forwards calls from other
threads through the bridge.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio


class PauseGate:
    """Open (passes run) or paused (passes wait, the running one is cancelled)."""

    def __init__(self, *, paused: bool = False) -> None:
        self._is_paused = paused
        self._opened: anyio.Event | None = None  # created on the loop, when first awaited
        self._running: set[anyio.CancelScope] = set()

    @property
    def is_paused(self) -> bool:
        return self._is_paused

    def pause(self) -> None:
        """Stop passes: the running ones are cancelled, new ones wait for :meth:`resume`."""
        if self._is_paused:
            return
        self._is_paused = True
        self._opened = None
        for scope in list(self._running):
            scope.cancel()

    def resume(self) -> None:
        if not self._is_paused:
            return
        self._is_paused = False
        if self._opened is not None:
            self._opened.set()
        self._opened = None

    async def wait_open(self) -> None:
        """Return at once when open; otherwise when resumed (whichever pause it was)."""
        while self._is_paused:
            if self._opened is None:
                self._opened = anyio.Event()
            await self._opened.wait()

    @contextmanager
    def interruptible(self) -> Iterator[anyio.CancelScope]:
        """A scope for one pass that :meth:`pause` cancels; check ``cancelled_caught``.

        Entered while paused (a pause between the caller's wait and this), the scope is
        cancelled at once, so no work of the pass starts.
        """
        scope = anyio.CancelScope()
        if self._is_paused:
            scope.cancel()
        self._running.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._running.discard(scope)
