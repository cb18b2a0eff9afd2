"""How :class:`cocod.flow_instances.FlowInstances` waits: callers for a row to change, and
its sweeper thread for the next idle deadline.

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
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")

SWEEP_MIN_INTERVAL_S = 0.05
"""The sweeper never wakes more often than this, whatever the TTL."""


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


class Sweeper(Generic[T]):
    """The thread that closes idle flows at their deadline, one per cache.

    ``step_locked(now)`` (called with the cache's lock, the one ``wake`` holds) takes what
    expired and says how long to sleep, or ``None`` when nothing is left (the thread ends;
    the next open starts another); ``close`` closes what it took, outside the lock.
    """

    def __init__(
        self,
        wake: threading.Condition,
        step_locked: Callable[[float], tuple[list[T], float] | None],
        close: Callable[[list[T]], None],
    ) -> None:
        self._wake = wake
        self._step_locked = step_locked
        self._close = close
        self._thread: threading.Thread | None = None
        self._is_stopping = False

    def start_locked(self) -> None:
        """Start the thread, or wake it to look at the new deadlines (lock held)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="cocod-flow-instances-sweeper", daemon=True
            )
            self._thread.start()
        self._wake.notify_all()

    def stop(self, timeout: float) -> None:
        """End the thread (waiting at most ``timeout`` s); :meth:`start_locked` restarts."""
        with self._wake:
            self._is_stopping = True
            self._wake.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        with self._wake:
            self._is_stopping = False

    def _run(self) -> None:
        while True:
            with self._wake:
                step = None if self._is_stopping else self._step_locked(time.monotonic())
                if step is None:
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return
                taken, delay = step
                if not taken:
                    self._wake.wait(max(delay, SWEEP_MIN_INTERVAL_S))
            self._close(taken)


__all__ = ["SWEEP_MIN_INTERVAL_S", "Signal", "Sweeper", "loop_waker"]
