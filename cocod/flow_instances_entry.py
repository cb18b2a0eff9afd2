"""The table rows of :class:`cocod.flow_instances.FlowInstances` and how their waiters wake.

Apart so the cache's own module stays about its rules (get-or-open, expiry, eviction,
pins). A row waits for its one opener: threads on a ``threading.Event``, async callers on
an event of their own loop that the opener sets through ``call_soon_threadsafe``, so a
waiting coroutine holds no worker thread (enough parked threads would exhaust anyio's
default limiter and starve the opener's own ``to_thread`` calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar


class ManagedFlow(Protocol):
    """What FlowInstances needs of a flow (``cocod.Flow`` has it)."""

    def setup(self, report_to_stdout: bool = False) -> None: ...
    def update(self, *args: Any, **kwargs: Any) -> Any: ...
    def drop(self, report_to_stdout: bool = False) -> None: ...
    def close(self) -> None: ...


F = TypeVar("F", bound=ManagedFlow)


class CloseReason(enum.StrEnum):
    """Why a flow was closed (the third argument of ``on_close``)."""

    EXPIRED = "expired"
    """Idle for ``ttl`` seconds."""
    EVICTED = "evicted"
    """The least recently used idle flow past ``maxsize``."""
    CLOSED = "closed"
    """``close(name)`` or ``close_all()`` (maybe deferred until its call ended)."""
    ABANDONED = "abandoned"
    """Its open failed or was cancelled after the opener returned it (setup raised)."""


@dataclass
class OpenEntry(Generic[F]):
    """One name's row of the table: opening (``ready`` unset) or open (``flow``)."""

    ready: threading.Event = field(default_factory=threading.Event)
    flow: F | None = None
    error: BaseException | None = None
    last_used: float = 0.0
    pins: int = 0
    close_when_released: bool = False
    wakers: list[Callable[[], None]] = field(default_factory=list)
    """Async waiters of an entry still opening (each wakes one event loop's waiter)."""


def set_ready_locked(entry: OpenEntry[Any]) -> None:
    """Wake every waiter of an entry: threads through its event, loops through theirs."""
    entry.ready.set()
    wakers, entry.wakers = entry.wakers, []
    for wake in wakers:
        wake()


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


__all__ = ["CloseReason", "F", "ManagedFlow", "OpenEntry", "loop_waker", "set_ready_locked"]
