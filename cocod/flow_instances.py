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
eviction picks another, and ``close(name)`` closes it when the call ends. Once a close is
asked, nobody gets that flow again: a later caller waits (``close_timeout``) until it is
closed and opens a fresh one (its opener sees the new parameters, e.g. after a reload).

Works from threads and from async code. The ``*_async`` methods use the flow's own async
API (``setup_async``/``update_async``/``drop_async``) on the caller's loop and accept an
async opener; only a sync opener goes to a worker thread (waiters hold none:
:mod:`cocod.flow_instances_wait`). ``on_close`` tells an owner (the daemon) when a flow
was closed and why; ``sweep=False`` leaves expiry to its own loop (``expire()``,
``next_expiry()``) instead of a thread.
``docs/flow-instances.md`` shows it beside the tutorial's program.
"""

from __future__ import annotations

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
    FlowStillClosingError,
    ManagedFlow,
    OpenEntry,
    next_deadline_locked,
    sweep_step_locked,
    take_evicted_locked,
    take_expired_locked,
)
from cocod.flow_instances_wait import Sweeper

log = structlog.get_logger(__name__)


class FlowInstances(Generic[F]):
    """Get-or-open flows by name; close them when idle (``ttl``) or evicted (``maxsize``).

    ``opener(name)`` returns a newly opened flow for ``name`` (typically
    ``cocod.open_flow(f"TextEmbedding_{name}", flow_def(params[name]))``); with
    ``setup=True`` its ``setup()`` runs before any caller gets it. A caller that finds
    its name's flow waiting to close waits at most ``close_timeout`` seconds for it
    (then :class:`~cocod.flow_instances_entry.FlowStillClosingError`).
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
        close_timeout: float = 60.0,
    ) -> None:
        if maxsize < 1:
            raise ValueError("FlowInstances(maxsize=...) must be at least 1")
        if ttl <= 0:
            raise ValueError("FlowInstances(ttl=...) must be positive (seconds)")
        if close_timeout < 0:
            raise ValueError("FlowInstances(close_timeout=...) must not be negative (seconds)")
        self._opener = opener
        self._is_async_opener = inspect.iscoroutinefunction(opener)
        self._on_close = on_close
        self._should_sweep = sweep
        self.maxsize = maxsize
        self.ttl = float(ttl)
        self.close_timeout = float(close_timeout)
        self._should_setup = setup
        self._report = report_to_stdout
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, OpenEntry[F]] = OrderedDict()
        self._sweeper: Sweeper[tuple[str, OpenEntry[F]]] = Sweeper(
            threading.Condition(self._lock),
            lambda now: sweep_step_locked(self._entries, now, self.ttl),
            lambda taken: self._close_all_of(taken, CloseReason.EXPIRED),
        )
        self.opens = 0
        """Flows opened so far (an open that failed is not counted)."""

    # -- getting -------------------------------------------------------------------------
    def get(self, name: str) -> F:
        """The open flow for ``name``, opening (and setting it up) on first use."""
        entry = self._acquire(name, pin=False)
        assert entry.flow is not None
        return entry.flow

    def _acquire(self, name: str, *, pin: bool) -> OpenEntry[F]:
        deadline: float | None = None
        while True:
            with self._lock:
                entry, step = self._next_step_locked(name, pin)
            if step == "have" or (step == "open" and self._open(name, entry, pin)):
                return entry
            if step == "opening":
                entry.ready.wait()
                if entry.error is not None:
                    raise entry.error
            elif step == "closing":
                deadline = deadline or time.monotonic() + self.close_timeout
                if not entry.gone.wait(max(0.0, deadline - time.monotonic())):
                    raise FlowStillClosingError.after(name, self.close_timeout)
            # Opened by another caller, closed meanwhile, or its opener was cancelled (or a
            # close took the flow it opened): look again under the lock.

    def _next_step_locked(self, name: str, pin: bool) -> tuple[OpenEntry[F], str]:
        """This caller's next step for ``name``: ``have`` (its row, touched and pinned if
        ``pin``), ``open`` (a new row: open it, or abandon it), ``opening`` (wait for its
        ``ready``) or ``closing`` (a close is pending or running: wait for its ``gone``)."""
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = OpenEntry()
            return entry, "open"
        if entry.is_usable:
            return self._touch(name, entry, pin), "have"
        return entry, "opening" if entry.flow is None else "closing"

    def _touch(self, name: str, entry: OpenEntry[F], pin: bool) -> OpenEntry[F]:
        """Mark a usable entry used (lock held). A pending close is never cleared here:
        the caller that asked for it wants that flow gone."""
        entry.last_used = time.monotonic()
        if pin:
            entry.pins += 1
        self._entries.move_to_end(name)
        return entry

    def _open(self, name: str, entry: OpenEntry[F], pin: bool) -> bool:
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
        entry.ready.set()
        entry.gone.set()

    def _opened(self, name: str, entry: OpenEntry[F], flow: F, pin: bool) -> bool:
        """Publish an opened flow; ``False`` when a close asked during the open took it
        (a ``get``, holding no pin: it looks again and opens afresh)."""
        with self._lock:
            entry.flow = flow
            self.opens += 1
            is_taken = entry.close_when_released and not pin
            if is_taken:
                entry.closing = True
                to_close, reason = [(name, entry)], CloseReason.CLOSED
            else:
                self._touch(name, entry, pin)
                to_close, reason = (
                    take_evicted_locked(self._entries, self.maxsize, keep=name),
                    CloseReason.EVICTED,
                )
                if self._should_sweep:
                    self._sweeper.start_locked()
        entry.ready.set()
        self._close_all_of(to_close, reason)
        return not is_taken

    async def get_async(self, name: str) -> F:
        """:meth:`get` for async code (an async opener and ``setup_async`` run on the loop)."""
        entry = await self._acquire_async(name, pin=False)
        assert entry.flow is not None
        return entry.flow

    async def _acquire_async(self, name: str, *, pin: bool) -> OpenEntry[F]:
        deadline: float | None = None
        while True:
            with self._lock:
                entry, step = self._next_step_locked(name, pin)
            if step == "have" or (step == "open" and await self._open_async(name, entry, pin)):
                return entry
            if step == "opening":
                await entry.ready.wait_async()
                if entry.error is not None:
                    raise entry.error
            elif step == "closing":
                deadline = deadline or time.monotonic() + self.close_timeout
                with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                    await entry.gone.wait_async()
                if not entry.gone.is_set():
                    raise FlowStillClosingError.after(name, self.close_timeout)

    async def _open_async(self, name: str, entry: OpenEntry[F], pin: bool) -> bool:
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
        entry = self._acquire(name, pin=True)
        try:
            assert entry.flow is not None
            yield entry.flow
        finally:
            self._release(name, entry)

    def _release(self, name: str, entry: OpenEntry[F]) -> None:
        with self._lock:
            entry.pins -= 1
            entry.last_used = time.monotonic()
            if self._entries.get(name) is entry:
                self._entries.move_to_end(name)  # the end of a use is a use: LRU order too
            if entry.pins == 0 and entry.close_when_released and not entry.closing:
                entry.closing = True
                to_close, reason = [(name, entry)], CloseReason.CLOSED
            else:
                to_close, reason = (
                    take_evicted_locked(self._entries, self.maxsize),
                    CloseReason.EVICTED,
                )
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
        entry = await self._acquire_async(name, pin=True)
        try:
            assert entry.flow is not None
            yield entry.flow
        finally:
            self._release(name, entry)

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
        """Close ``name`` now, or when its running calls (or its open) end.

        From now on nobody gets that flow: a later call for ``name`` waits until it is
        closed, then opens a new one.
        """
        with self._lock:
            entry = self._entries.get(name)
            to_close = [(name, entry)] if entry is not None and entry.ask_close() else []
        self._close_all_of(to_close, CloseReason.CLOSED)

    def close_all(self, *, timeout: float = 10.0) -> None:
        """Close every flow (those in use when their call ends) and stop the sweeper.

        The cache stays usable: a later ``get`` opens again and restarts the sweeper.
        """
        self._sweeper.stop(timeout)
        with self._lock:
            to_close = [(n, e) for n, e in self._entries.items() if e.ask_close()]
        self._close_all_of(to_close, CloseReason.CLOSED)

    def names(self) -> list[str]:
        """Names with an open flow, least recently used first."""
        with self._lock:
            return [n for n, e in self._entries.items() if e.flow is not None and not e.closing]

    def is_in_use(self, name: str) -> bool:
        """Whether ``name`` is pinned by a running ``update``/``drop``/``use``."""
        with self._lock:
            entry = self._entries.get(name)
            return entry is not None and entry.pins > 0

    def is_closing(self, name: str) -> bool:
        """Whether ``name``'s flow waits to close: a call for it now waits for that."""
        with self._lock:
            entry = self._entries.get(name)
            return entry is not None and (entry.closing or entry.close_when_released)

    def expire(self) -> list[str]:
        """Close the flows idle for ``ttl`` now (the sweeper does this on its own)."""
        with self._lock:
            expired = take_expired_locked(self._entries, time.monotonic(), self.ttl)
        self._close_all_of(expired, CloseReason.EXPIRED)
        return [name for name, _ in expired]

    def next_expiry(self) -> float | None:
        """Seconds until the next idle flow expires (``None``: no flow is idle).

        A flow opened or released later expires ``ttl`` after that, so an owner calling
        :meth:`expire` from its own loop may sleep ``min(next_expiry(), ttl)``.
        """
        with self._lock:
            deadline = next_deadline_locked(self._entries, self.ttl)
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    # -- internals (lock held where the name says so) ------------------------------------
    def _close_all_of(self, entries: list[tuple[str, OpenEntry[F]]], reason: CloseReason) -> None:
        """Close entries marked ``closing``; each leaves the table only once its flow is
        closed, so a waiter that opens the name afresh never meets the old flow."""
        for name, entry in entries:
            try:
                assert entry.flow is not None
                self._close_one(name, entry.flow, reason)
            finally:
                with self._lock:
                    if self._entries.get(name) is entry:
                        del self._entries[name]
                entry.gone.set()

    def _close_one(self, name: str, flow: F, reason: CloseReason) -> None:
        """Closing is in-process bookkeeping; a failure is logged, never raised into a get()."""
        try:
            flow.close()
            log.debug("flow_instances.closed", name=name, reason=str(reason))
            if self._on_close is not None:
                self._on_close(name, flow, reason)
        except Exception:
            log.warning("flow_instances.close_failed", name=name, exc_info=True)


__all__ = ["CloseReason", "FlowInstances", "FlowStillClosingError", "ManagedFlow"]
