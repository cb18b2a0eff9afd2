"""Sync-over-async: one event loop serves every cocod call of the process.

asyncpg pools belong to the loop that created them, so all database work of the library
runs on one loop, *the library loop*. Normally that is an anyio blocking portal
(``anyio.from_thread.start_blocking_portal``) in a thread of its own, started on first use;
the daemon instead adopts its own loop (:meth:`EventLoopBridge.adopted_loop`).

- Sync methods submit a coroutine and block. A ``KeyboardInterrupt`` (Ctrl+C) while they
  block cancels the coroutine and waits, for at most :data:`CANCEL_GRACE_SECONDS`, until
  it has unwound (an open transaction rolls back, a shielded commit completes), then
  re-raises, so nothing keeps running under the interpreter's exit hooks.
- ``*_async`` methods await the coroutine directly on the library loop, or from another
  loop through the portal (cancelling the caller cancels the coroutine).
- Services (a live updater started with the v0 ``start()``) run in a task group the
  bridge owns on the library loop, never as loose tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")

CANCEL_GRACE_SECONDS = 5.0
"""How long Ctrl+C during a sync call waits for the cancelled coroutine to unwind."""

Service = Callable[..., Coroutine[Any, Any, None]]
"""An ``async def serve(*, task_status)`` that reports ready with ``task_status.started()``."""


class EventLoopBridge:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._portal_cm: AbstractContextManager[anyio.from_thread.BlockingPortal] | None = None
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._thread_id: int | None = None
        self._host: anyio.abc.TaskGroup | None = None
        self._is_adopted = False

    # -- the library loop -------------------------------------------------------------------
    def _ensure_portal(self) -> anyio.from_thread.BlockingPortal:
        with self._lock:
            if self._portal is None:
                cm = anyio.from_thread.start_blocking_portal(name="cocod-loop")
                portal = cm.__enter__()
                _, host = portal.start_task(_serve_host)
                self._token = portal.call(anyio.lowlevel.current_token)
                self._thread_id = portal.call(threading.get_ident)
                self._portal_cm, self._portal, self._host = cm, portal, host
            return self._portal

    @contextlib.asynccontextmanager
    async def adopted_loop(self) -> AsyncIterator[None]:
        """Make the running loop the library loop while the block runs (the daemon's).

        Services started through the bridge (v0 ``FlowLiveUpdater.start_async``) run in a
        task group of this block, so they end with it.
        """
        self.adopt_running_loop()
        try:
            async with anyio.create_task_group() as tg:
                self._host = tg
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self.release_loop()

    def adopt_running_loop(self) -> None:
        """Make the caller's loop the library loop (prefer :meth:`adopted_loop`).

        Without :meth:`adopted_loop` there is no task group to host v0 ``start()``-style
        services; start them with ``task_group.start(updater.serve)`` instead.
        """
        token = anyio.lowlevel.current_token()
        with self._lock:
            if self._portal is not None or (self._is_adopted and self._token != token):
                raise RuntimeError("cocod's event loop is already running elsewhere")
            self._token = token
            self._thread_id = threading.get_ident()
            self._is_adopted = True

    def release_loop(self) -> None:
        """Forget an adopted loop (it is not ours to stop)."""
        with self._lock:
            if self._is_adopted:
                self._token = self._thread_id = self._host = None
                self._is_adopted = False

    def is_loop_thread(self) -> bool:
        """Is the caller running on the library loop?"""
        return self._thread_id is not None and threading.get_ident() == self._thread_id

    # -- calls ------------------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the library loop and block until it finishes."""
        if self.is_loop_thread():
            coro.close()
            raise RuntimeError(
                "a synchronous cocod API was called from inside cocod's own event loop; "
                "use the *_async variant instead"
            )
        if _has_running_loop():
            warnings.warn(
                "a synchronous cocod API is blocking a running event loop; "
                "use the *_async variant instead",
                RuntimeWarning,
                stacklevel=3,
            )
        if self._is_adopted:
            token = self._token
            assert token is not None
            return anyio.from_thread.run(_await, coro, token=token)
        portal = self._ensure_portal()
        unwound = threading.Event()

        async def call() -> T:
            try:
                return await coro
            finally:
                unwound.set()

        future = portal.start_task_soon(call)
        try:
            return future.result()
        except KeyboardInterrupt:
            # Ctrl+C: cancel the pass and let it unwind before the interpreter's exit
            # hooks close the pool under it. A second Ctrl+C interrupts this wait.
            future.cancel()
            if not unwound.wait(CANCEL_GRACE_SECONDS):
                log.warning("bridge.cancel_timeout", seconds=CANCEL_GRACE_SECONDS)
            raise

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the library loop, from it or from any other loop."""
        if self.is_loop_thread():
            return await coro
        if self._is_adopted:
            # Another loop calling into the daemon's: through a worker thread.
            return await anyio.to_thread.run_sync(self.run, coro)
        portal = self._ensure_portal()
        return await portal.call_async(_await, coro)

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Run a quick callable on the library loop from any thread (e.g. cancel a scope)."""
        if self.is_loop_thread() or self._token is None:
            fn()
            return
        anyio.from_thread.run_sync(fn, token=self._token)

    async def start_service(self, service: Service) -> None:
        """Start ``service`` in the bridge's task group and return once it is ready.

        Must run on the library loop (``bridge.run(bridge.start_service(...))``). The
        service must not raise after it is ready: that would end every service hosted here.
        """
        host = self._host
        if host is None:
            raise RuntimeError(
                "cocod's event loop was adopted without a task group for services; use "
                "`async with bridge.adopted_loop()`, or start it with "
                "`await task_group.start(updater.serve)`"
            )
        await host.start(service)

    def stop(self) -> None:
        """Cancel hosted services and stop the portal thread (if the bridge started one)."""
        with self._lock:
            cm, portal, host = self._portal_cm, self._portal, self._host
            if portal is None:
                return
            self._portal_cm = self._portal = self._host = None
            self._token = self._thread_id = None
        assert cm is not None
        if host is not None:
            with contextlib.suppress(RuntimeError):
                portal.call(host.cancel_scope.cancel)
        cm.__exit__(None, None, None)


async def _await(coro: Coroutine[Any, Any, T]) -> T:
    return await coro


async def _serve_host(*, task_status: anyio.abc.TaskStatus[anyio.abc.TaskGroup]) -> None:
    """The portal task holding the task group that hosts services."""
    async with anyio.create_task_group() as tg:
        task_status.started(tg)
        await anyio.sleep_forever()


def _has_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


bridge = EventLoopBridge()
