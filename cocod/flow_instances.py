"""``FlowInstances``: the "Manage Flows Dynamically" cache of open flows, done right.

v0's tutorial keeps flows opened on demand in a cachetools ``TTLCache`` whose ``popitem``
closes them. That fails twice: TTL expiry deletes entries without calling ``popitem`` (so
an expired flow is never closed, and reopening it raises "already exists"), and ``@cached``
without a lock lets concurrent first callers each open the same flow (all but one fail).

Here one lock guards the table; the first caller for a name opens it (``opener(name)``, then
``setup()``) while later callers for that name wait for it; other names never wait on an
opening. A flow is closed when it has not been used for ``ttl`` seconds (from its last
``get`` or the end of its last ``update``/``drop``), by a sweeper thread that sleeps until
the next deadline, and when it is the least recently used one past ``maxsize``. A flow
pinned by ``update``/``drop``/``use`` is never closed under that call: expiry skips it,
eviction picks another, and ``close(name)`` closes it when the call ends.

Works from threads and from async code. The ``*_async`` methods use the flow's own async
API (``setup_async``/``update_async``/``drop_async``) on the caller's loop and accept an
async opener; only a sync opener goes to a worker thread (waiters hold none:
:mod:`cocod.flow_instances_entry`). ``on_close`` tells an owner (the daemon) when a flow
was closed and why; ``sweep=False`` leaves expiry to its own loop (``expire()``,
``next_expiry()``) instead of a thread.
``docs/flow-instances.md`` shows it beside the tutorial's program.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic

import anyio
import structlog

from cocod.flow_instances_entry import (
    CloseReason,
    F,
    ManagedFlow,
    OpenEntry,
    loop_waker,
    set_ready_locked,
)

log = structlog.get_logger(__name__)

SWEEP_MIN_INTERVAL_S = 0.05
"""The sweeper never wakes more often than this, whatever the TTL."""


class FlowInstances(Generic[F]):
    """Get-or-open flows by name; close them when idle (``ttl``) or evicted (``maxsize``).

    ``opener(name)`` returns a newly opened flow for ``name`` (typically
    ``cocod.open_flow(f"TextEmbedding_{name}", flow_def(params[name]))``); with
    ``setup=True`` its ``setup()`` runs before any caller gets it.
    """

    def __init__(
        self,
        opener: Callable[[str], F] | Callable[[str], Awaitable[F]],
        *,
        maxsize: int = 20,
        ttl: float = 600.0,
        setup: bool = True,
        report_to_stdout: bool = False,
        on_close: Callable[[str, F, CloseReason], None] | None = None,
        sweep: bool = True,
    ) -> None:
        if maxsize < 1:
            raise ValueError("FlowInstances(maxsize=...) must be at least 1")
        if ttl <= 0:
            raise ValueError("FlowInstances(ttl=...) must be positive (seconds)")
        self._opener = opener
        self._is_async_opener = inspect.iscoroutinefunction(opener)
        self._on_close = on_close
        self._should_sweep = sweep
        self.maxsize = maxsize
        self.ttl = float(ttl)
        self._should_setup = setup
        self._report = report_to_stdout
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, OpenEntry[F]] = OrderedDict()
        self._wake = threading.Condition(self._lock)
        self._sweeper: threading.Thread | None = None
        self._is_stopping = False
        self.opens = 0
        """Flows opened so far (an open that failed is not counted)."""

    # -- getting -------------------------------------------------------------------------
    def get(self, name: str) -> F:
        """The open flow for ``name``, opening (and setting it up) on first use."""
        return self._acquire(name, pin=False)

    def _acquire(self, name: str, *, pin: bool) -> F:
        while True:
            with self._lock:
                entry, is_opener = self._lookup_locked(name)
                if entry.flow is not None:
                    return self._touch(name, entry, pin)
            if is_opener:
                return self._open(name, entry, pin)
            entry.ready.wait()
            if entry.error is not None:
                raise entry.error
            # Opened by another caller, closed meanwhile, or its opener was cancelled:
            # look again under the lock.

    def _lookup_locked(self, name: str) -> tuple[OpenEntry[F], bool]:
        """The entry for ``name`` (open, or still opening) and whether this caller opens it
        (a new entry: the caller must open it, or abandon it)."""
        entry = self._entries.get(name)
        if entry is not None:
            return entry, False
        entry = self._entries[name] = OpenEntry()
        return entry, True

    def _touch(self, name: str, entry: OpenEntry[F], pin: bool) -> F:
        """Mark a ready entry used (lock held)."""
        assert entry.flow is not None
        entry.last_used = time.monotonic()
        entry.close_when_released = False
        if pin:
            entry.pins += 1
        self._entries.move_to_end(name)
        return entry.flow

    def _open(self, name: str, entry: OpenEntry[F], pin: bool) -> F:
        if self._is_async_opener:
            self._abandon(name, entry, None)
            raise TypeError("this FlowInstances has an async opener: use get_async/use_async")
        flow: F | None = None
        try:
            flow = self._opener(name)  # type: ignore[assignment]
            assert flow is not None
            if self._should_setup:
                flow.setup(report_to_stdout=self._report)
        except BaseException as e:
            self._abandon(name, entry, e, flow)
            raise
        return self._opened(name, entry, flow, pin)

    def _abandon(
        self, name: str, entry: OpenEntry[F], error: BaseException | None, flow: F | None = None
    ) -> None:
        """An open failed: forget the entry and wake its waiters.

        Waiters get an Exception as their own; after a cancellation (not an Exception, and
        not theirs to raise) they look again and one of them opens.
        """
        if flow is not None:
            # So the next get() can open it again.
            self._close_one(name, flow, CloseReason.ABANDONED)
        with self._lock:
            entry.error = error if isinstance(error, Exception) else None
            if self._entries.get(name) is entry:
                del self._entries[name]
            set_ready_locked(entry)

    def _opened(self, name: str, entry: OpenEntry[F], flow: F, pin: bool) -> F:
        with self._lock:
            entry.flow = flow
            self.opens += 1
            result = self._touch(name, entry, pin)
            set_ready_locked(entry)
            evicted = self._evict_locked(keep=name)
            if self._should_sweep:
                self._start_sweeper_locked()
            self._wake.notify_all()
        self._close_all_of(evicted, CloseReason.EVICTED)
        return result

    async def get_async(self, name: str) -> F:
        """:meth:`get` for async code (an async opener and ``setup_async`` run on the loop)."""
        return await self._acquire_async(name, pin=False)

    async def _acquire_async(self, name: str, *, pin: bool) -> F:
        while True:
            woken: asyncio.Event | None = None
            wake: Callable[[], None] | None = None
            with self._lock:
                entry, is_opener = self._lookup_locked(name)
                if entry.flow is not None:
                    return self._touch(name, entry, pin)
                if not is_opener:
                    woken, wake = loop_waker()
                    if wake is not None:
                        entry.wakers.append(wake)
            if is_opener:
                return await self._open_async(name, entry, pin)
            if woken is None:  # not asyncio (trio): park in a worker thread instead
                await anyio.to_thread.run_sync(entry.ready.wait, abandon_on_cancel=True)
            else:
                try:
                    await woken.wait()
                finally:
                    with self._lock:
                        if wake in entry.wakers:
                            entry.wakers.remove(wake)  # cancelled while waiting
            if entry.error is not None:
                raise entry.error

    async def _open_async(self, name: str, entry: OpenEntry[F], pin: bool) -> F:
        flow: F | None = None
        try:
            if self._is_async_opener:
                flow = await self._opener(name)  # type: ignore[misc]
            else:
                flow = await anyio.to_thread.run_sync(self._opener, name)  # type: ignore[arg-type]
            assert flow is not None
            if self._should_setup:
                setup_async = getattr(flow, "setup_async", None)
                if setup_async is not None:
                    await setup_async(report_to_stdout=self._report)
                else:
                    await anyio.to_thread.run_sync(flow.setup, self._report)
        except BaseException as e:
            self._abandon(name, entry, e, flow)  # synchronous: runs even when cancelled
            raise
        return self._opened(name, entry, flow, pin)

    # -- using ---------------------------------------------------------------------------
    @contextmanager
    def use(self, name: str) -> Iterator[F]:
        """The flow for ``name``, pinned open for the ``with`` block."""
        flow = self._acquire(name, pin=True)
        try:
            yield flow
        finally:
            self._release(name)

    def _release(self, name: str) -> None:
        to_close: list[tuple[str, F]] = []
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return
            entry.pins -= 1
            entry.last_used = time.monotonic()
            self._entries.move_to_end(name)  # the end of a use is a use: LRU order too
            reason = CloseReason.CLOSED
            if entry.pins == 0 and entry.close_when_released and entry.flow is not None:
                del self._entries[name]
                to_close.append((name, entry.flow))
            else:
                to_close = self._evict_locked()
                reason = CloseReason.EVICTED
        self._close_all_of(to_close, reason)

    def update(self, name: str, **kwargs: Any) -> Any:
        """``flow.update(**kwargs)`` on the flow for ``name``; it stays open meanwhile."""
        with self.use(name) as flow:
            return flow.update(**kwargs)

    def drop(self, name: str, *, report_to_stdout: bool = False) -> None:
        """Drop the flow's persistent resources (the flow stays open, as in v0)."""
        with self.use(name) as flow:
            flow.drop(report_to_stdout=report_to_stdout)

    @asynccontextmanager
    async def use_async(self, name: str) -> AsyncIterator[F]:
        """:meth:`use` for async code."""
        flow = await self._acquire_async(name, pin=True)
        try:
            yield flow
        finally:
            self._release(name)

    async def update_async(self, name: str, **kwargs: Any) -> Any:
        async with self.use_async(name) as flow:
            update_async = getattr(flow, "update_async", None)
            if update_async is not None:
                return await update_async(**kwargs)
            return await anyio.to_thread.run_sync(lambda: flow.update(**kwargs))

    async def drop_async(self, name: str, *, report_to_stdout: bool = False) -> None:
        async with self.use_async(name) as flow:
            drop_async = getattr(flow, "drop_async", None)
            if drop_async is not None:
                await drop_async(report_to_stdout=report_to_stdout)
            else:
                await anyio.to_thread.run_sync(flow.drop, report_to_stdout)

    # -- closing -------------------------------------------------------------------------
    def close(self, name: str) -> None:
        """Close ``name`` now, or when its running update/drop ends."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.flow is None:
                return
            if entry.pins:
                entry.close_when_released = True
                return
            del self._entries[name]
            flow = entry.flow
        self._close_one(name, flow, CloseReason.CLOSED)

    def close_all(self, *, timeout: float = 10.0) -> None:
        """Close every flow (those in use when their call ends) and stop the sweeper.

        The cache stays usable: a later ``get`` opens again and restarts the sweeper.
        """
        with self._lock:
            self._is_stopping = True
            self._wake.notify_all()
            sweeper, self._sweeper = self._sweeper, None
            to_close: list[tuple[str, F]] = []
            for name, entry in list(self._entries.items()):
                if entry.flow is None:
                    continue  # still opening: its opener keeps it
                if entry.pins:
                    entry.close_when_released = True
                else:
                    del self._entries[name]
                    to_close.append((name, entry.flow))
        if sweeper is not None:
            sweeper.join(timeout)
        with self._lock:
            self._is_stopping = False
        self._close_all_of(to_close, CloseReason.CLOSED)

    def names(self) -> list[str]:
        """Names with an open flow, least recently used first."""
        with self._lock:
            return [n for n, e in self._entries.items() if e.flow is not None]

    def is_in_use(self, name: str) -> bool:
        """Whether ``name`` is pinned by a running ``update``/``drop``/``use``."""
        with self._lock:
            entry = self._entries.get(name)
            return entry is not None and entry.pins > 0

    def expire(self) -> list[str]:
        """Close the flows idle for ``ttl`` now (the sweeper does this on its own)."""
        with self._lock:
            expired = self._expired_locked(time.monotonic())
        self._close_all_of(expired, CloseReason.EXPIRED)
        return [name for name, _ in expired]

    def next_expiry(self) -> float | None:
        """Seconds until the next idle flow expires (``None``: no flow is idle).

        A flow opened or released later expires ``ttl`` after that, so an owner calling
        :meth:`expire` from its own loop may sleep ``min(next_expiry(), ttl)``.
        """
        with self._lock:
            deadline = self._next_deadline_locked()
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    # -- internals (lock held where the name says so) ------------------------------------
    def _expired_locked(self, now: float) -> list[tuple[str, F]]:
        out: list[tuple[str, F]] = []
        for name, entry in list(self._entries.items()):
            if entry.flow is not None and not entry.pins and now - entry.last_used >= self.ttl:
                del self._entries[name]
                out.append((name, entry.flow))
        return out

    def _evict_locked(self, keep: str | None = None) -> list[tuple[str, F]]:
        """Least recently used idle flows past ``maxsize`` (in-use ones and ``keep`` are
        skipped, so the cache may stay over ``maxsize`` while every other flow is busy)."""
        out: list[tuple[str, F]] = []
        excess = sum(1 for e in self._entries.values() if e.flow is not None) - self.maxsize
        for name, entry in list(self._entries.items()):
            if excess <= 0:
                break
            if entry.flow is not None and not entry.pins and name != keep:
                del self._entries[name]
                out.append((name, entry.flow))
                excess -= 1
        return out

    def _next_deadline_locked(self) -> float | None:
        idle = [e.last_used for e in self._entries.values() if e.flow is not None and not e.pins]
        return min(idle) + self.ttl if idle else None

    def _start_sweeper_locked(self) -> None:
        if self._sweeper is None or not self._sweeper.is_alive():
            self._sweeper = threading.Thread(
                target=self._sweep, name="cocod-flow-instances-sweeper", daemon=True
            )
            self._sweeper.start()

    def _sweep(self) -> None:
        """Close expired flows; sleep until the next deadline (or until woken)."""
        while True:
            with self._lock:
                if self._is_stopping or not self._entries:
                    if self._sweeper is threading.current_thread():
                        self._sweeper = None
                    return
                now = time.monotonic()
                expired = self._expired_locked(now)
                deadline = self._next_deadline_locked()
                delay = deadline - now if deadline is not None else self.ttl
                if not expired:
                    self._wake.wait(max(delay, SWEEP_MIN_INTERVAL_S))
            self._close_all_of(expired, CloseReason.EXPIRED)

    def _close_all_of(self, flows: list[tuple[str, F]], reason: CloseReason) -> None:
        for name, flow in flows:
            self._close_one(name, flow, reason)

    def _close_one(self, name: str, flow: F, reason: CloseReason) -> None:
        """Closing is in-process bookkeeping; a failure is logged, never raised into a get()."""
        try:
            flow.close()
            log.debug("flow_instances.closed", name=name, reason=str(reason))
            if self._on_close is not None:
                self._on_close(name, flow, reason)
        except Exception:
            log.warning("flow_instances.close_failed", name=name, exc_info=True)


__all__ = ["CloseReason", "FlowInstances", "ManagedFlow"]
