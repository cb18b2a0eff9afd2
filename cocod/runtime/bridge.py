"""Sync-over-async: one background event loop thread serves every sync API call.

asyncpg pools belong to the loop that created them, so all database work of the library runs
on this one loop. Sync methods submit a coroutine and block; ``*_async`` methods await it
from whatever loop the caller runs (directly when the caller *is* this loop).
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class EventLoopBridge:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                started = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(started.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="cocod-loop", daemon=True)
                self._thread.start()
                started.wait()
                self._loop = loop
            return self._loop

    def adopt_running_loop(self) -> None:
        """Make the caller's loop the library's loop (the daemon runs everything on one)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is not None and self._loop is not loop and not self._loop.is_closed():
                raise RuntimeError("cocod's event loop is already running elsewhere")
            self._loop = loop
            self._thread = threading.current_thread()

    def release_loop(self) -> None:
        """Forget an adopted loop (it is not ours to stop)."""
        with self._lock:
            self._loop = self._thread = None

    def is_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the bridge loop and block until it finishes."""
        if self.is_loop_thread():
            coro.close()
            raise RuntimeError(
                "a synchronous cocod API was called from inside cocod's own event loop; "
                "use the *_async variant instead"
            )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            warnings.warn(
                "a synchronous cocod API is blocking a running event loop; "
                "use the *_async variant instead",
                RuntimeWarning,
                stacklevel=3,
            )
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the bridge loop from any loop."""
        loop = self.loop
        if asyncio.get_running_loop() is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        if not loop.is_running():
            loop.close()


bridge = EventLoopBridge()
