"""How callers of :class:`cocod.flow_instances.FlowInstances` wait for a row to change.

Apart so the cache's module stays about its rules. A row has two one-shot signals: its
open ended (``ready``) and it left the table after its close (``gone``). Threads wait on a
``threading.Event``; a coroutine waits on an event of its own loop, set through
``call_soon_threadsafe``, so a waiting coroutine holds no worker thread (enough parked
threads would exhaust anyio's default limiter and starve an opener's own ``to_thread``
calls). Under another async library (trio) the wait parks in a worker thread instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

import anyio


class Signal:
    """Set once, never cleared; wakes every thread and coroutine waiting for it.

    Its own small lock makes "is it set? else register my waker" atomic against
    :meth:`set`, so a wake-up is never lost whichever lock the owner holds.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], None]] = []

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        with self._lock:
            self._event.set()
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    def wait(self, timeout: float | None = None) -> bool:
        """Block this thread until set (``False``: ``timeout`` seconds passed first)."""
        return self._event.wait(timeout)

    async def wait_async(self) -> None:
        """:meth:`wait` for a coroutine, holding no worker thread under asyncio (bound it
        with ``anyio.move_on_after``)."""
        event, wake = loop_waker()
        if event is None or wake is None:  # not asyncio (trio): park in a worker thread
            await anyio.to_thread.run_sync(self._event.wait, abandon_on_cancel=True)
            return
        with self._lock:
            if self._event.is_set():
                return
            self._wakers.append(wake)
        try:
            await event.wait()
        finally:
            with self._lock:
                if wake in self._wakers:
                    self._wakers.remove(wake)  # timed out or cancelled while waiting


def loop_waker() -> tuple[asyncio.Event | None, Callable[[], None] | None]:
    """An event of the running asyncio loop and a thread-safe callable that sets it.

    ``(None, None)`` under another async library: the caller waits in a thread instead.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None, None
    event = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # that loop closed: nobody waits there now
            loop.call_soon_threadsafe(event.set)

    return event, wake


__all__ = ["Signal", "loop_waker"]
