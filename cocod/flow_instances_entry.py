"""The table of :class:`cocod.flow_instances.FlowInstances`: its rows, which rows expiry
and eviction take, and the cache's typed error.

Apart so the cache's own module stays about its protocol (get-or-open, pins, closing).
A row goes through: opening (``flow`` is None until ``ready``), open, close pending
(``close_when_released``: a close was asked while a call held it, or while it opened),
closing (``closing``: a thread is closing its flow), gone (out of the table, ``gone`` set).
A closing row stays in the table until its flow is closed, so nobody opens the same name
again while the old flow still holds its flow name: a caller that finds a row closing, or
with a close pending, waits for ``gone`` and opens afresh (:mod:`cocod.flow_instances_wait`).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from cocod.errors import CocodError
from cocod.flow_instances_wait import Signal


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


class FlowStillClosingError(CocodError, TimeoutError):
    """A call for a name waited ``close_timeout`` seconds for that name's previous flow to
    close (``close(name)`` was asked while another call still used it), and it did not.

    ``name`` is the cache key, ``timeout`` the seconds waited. Retrying once the call
    holding the old flow has ended works.
    """

    def __init__(self, message: str, name: str, timeout: float) -> None:
        super().__init__(message)
        self.name = name
        self.timeout = timeout

    @classmethod
    def after(cls, name: str, timeout: float) -> FlowStillClosingError:
        return cls(
            f"the flow for {name!r} was closed while a call still used it, and that call "
            f"has not ended after {timeout:g} s; retry when it has finished "
            "(or give FlowInstances a longer close_timeout)",
            name,
            timeout,
        )


@dataclass
class OpenEntry(Generic[F]):
    """One name's row of the table (the module docstring lists its states)."""

    ready: Signal = field(default_factory=Signal)
    gone: Signal = field(default_factory=Signal)
    flow: F | None = None
    error: BaseException | None = None
    last_used: float = 0.0
    pins: int = 0
    close_when_released: bool = False
    closing: bool = False

    def ask_close(self) -> bool:
        """A close was asked (lock held): ``True`` when the caller closes it now, else it
        closes at its last release or right after its open (or is closing already)."""
        if self.closing:
            return False
        if self.pins or self.flow is None:
            self.close_when_released = True
            return False
        self.closing = True
        return True

    @property
    def is_usable(self) -> bool:
        """Open, and no close asked: a caller may have (and pin) its flow."""
        return self.flow is not None and not self.close_when_released and not self.closing

    @property
    def is_idle(self) -> bool:
        """Open, unpinned and not closing: expiry and eviction may take it."""
        return self.flow is not None and not self.pins and not self.closing


Table = OrderedDict[str, OpenEntry[F]]
"""Name → row, least recently used first (the cache's lock guards it)."""


def take_expired_locked(table: Table[F], now: float, ttl: float) -> list[tuple[str, OpenEntry[F]]]:
    """Idle rows unused for ``ttl`` seconds, marked closing (the caller closes them)."""
    out: list[tuple[str, OpenEntry[F]]] = []
    for name, entry in table.items():
        if entry.is_idle and now - entry.last_used >= ttl:
            entry.closing = True
            out.append((name, entry))
    return out


def take_evicted_locked(
    table: Table[F], maxsize: int, keep: str | None = None
) -> list[tuple[str, OpenEntry[F]]]:
    """Least recently used idle rows past ``maxsize``, marked closing. Pinned ones and
    ``keep`` are skipped, so the table may stay over ``maxsize`` while the rest is busy."""
    out: list[tuple[str, OpenEntry[F]]] = []
    excess = sum(1 for e in table.values() if e.flow is not None and not e.closing) - maxsize
    for name, entry in table.items():
        if excess <= 0:
            break
        if entry.is_idle and name != keep:
            entry.closing = True
            out.append((name, entry))
            excess -= 1
    return out


def next_deadline_locked(table: Table[F], ttl: float) -> float | None:
    """When the first idle row expires (monotonic clock), or None when none is idle."""
    idle = [e.last_used for e in table.values() if e.is_idle]
    return min(idle) + ttl if idle else None


def sweep_step_locked(
    table: Table[F], now: float, ttl: float
) -> tuple[list[tuple[str, OpenEntry[F]]], float] | None:
    """The sweeper's step: what expired and how long until the next deadline (``None``:
    the table is empty, the sweeper ends)."""
    if not table:
        return None
    expired = take_expired_locked(table, now, ttl)
    deadline = next_deadline_locked(table, ttl)
    return expired, deadline - now if deadline is not None else ttl


__all__ = [
    "CloseReason",
    "F",
    "FlowStillClosingError",
    "ManagedFlow",
    "OpenEntry",
    "Table",
    "next_deadline_locked",
    "sweep_step_locked",
    "take_evicted_locked",
    "take_expired_locked",
]
