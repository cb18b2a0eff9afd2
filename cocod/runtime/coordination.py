"""Process-wide coordination per flow name: who may run a pass, setup or drop, when.

Keyed by the full flow name rather than by Flow object, so a flow closed and reopened (the
daemon does this for on-demand instances) still serialises with work begun by its former
self. Passes over one source run one at a time; any number of passes may run while setup
and drop wait for them, and setup/drop exclude passes (v0's read/write lock). The
generation changes whenever setup or drop applied something: live updaters compare it to
reopen their state store instead of writing under a dropped flow's identity.

Across processes, the flow's lease (:mod:`cocod.storage.leases`) makes one process the
writer. :meth:`FlowCoordination.lease` gives a pass, setup or drop the lease it writes
under: the one an owner registered in ``held_lease`` for as long as it owns the flow (the
daemon), else one taken for the work and shared by whatever else of this process writes
the flow meanwhile (two sources' passes), released when the last of them ends.

:class:`Backoff` is the one retry policy of the runtime: every loop that retries after a
failure waits its delay, so no failure, however fast it repeats, can make a loop spin.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from cocod.errors import LeaseLostError
from cocod.storage.leases import FlowLease, LeaseHolder


class ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._changed = anyio.Condition()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        async with self._changed:
            while self._writer or self._writers_waiting:
                await self._changed.wait()
            self._readers += 1
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self._changed:
                    self._readers -= 1
                    self._changed.notify_all()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        async with self._changed:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    await self._changed.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self._changed:
                    self._writer = False
                    self._changed.notify_all()


class Backoff:
    """Capped exponential backoff with jitter: ``first``, twice that, … up to ``cap``.

    The jitter (each delay is drawn from [75 %, 100 %] of its step) keeps instances that
    failed together (a database restart) from retrying in lockstep.
    """

    def __init__(self, first: float = 1.0, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        step = min(self.cap, self.first * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return step * random.uniform(0.75, 1.0)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class _SharedLease:
    lease: FlowLease
    users: int = 0


@dataclass
class FlowCoordination:
    setup_lock: ReadWriteLock = field(default_factory=ReadWriteLock)
    source_locks: dict[str, anyio.Lock] = field(default_factory=dict)
    generation: int = 0
    held_lease: FlowLease | None = None
    """The lease an owner holds for the whole of its ownership (the daemon sets and
    clears it); passes, setup and drop of this process then write under it. While it is
    set but lost, they fail with LeaseLostError instead of taking another behind the
    owner's back."""
    _shared: _SharedLease | None = None
    _taking: anyio.Lock = field(default_factory=anyio.Lock)

    def source_lock(self, source: str) -> anyio.Lock:
        lock = self.source_locks.get(source)
        if lock is None:
            lock = self.source_locks[source] = anyio.Lock()
        return lock

    @asynccontextmanager
    async def lease(self, take: Callable[[], Awaitable[FlowLease]]) -> AsyncIterator[FlowLease]:
        """The lease to write under for the block: the owner's, a shared one, or a new one
        from ``take()`` (released, within its deadline, when its last user leaves)."""
        held = self.held_lease
        if held is not None:
            if not held.is_held:
                raise LeaseLostError(
                    f"the owner of flow id {held.flow_id} lost its lease "
                    f"({held.lost_reason or 'released'}); it is not written until it owns "
                    "the flow again"
                )
            yield held
            return
        async with self._taking:  # one acquisition at a time in this process
            shared = self._shared
            if shared is None or not shared.lease.is_held:
                shared = self._shared = _SharedLease(await take())
            shared.users += 1
        try:
            yield shared.lease
        finally:
            shared.users -= 1
            if shared.users == 0:
                if self._shared is shared:
                    self._shared = None
                await shared.lease.release()  # shielded, with its own deadline


_flows: dict[str, FlowCoordination] = {}


def coordination_for(full_flow_name: str) -> FlowCoordination:
    """Created on first use, on the library's event loop."""
    found = _flows.get(full_flow_name)
    if found is None:
        found = _flows[full_flow_name] = FlowCoordination()
    return found


_process_holder: LeaseHolder | None = None


def set_process_holder(holder: LeaseHolder) -> None:
    """Who this process is in the lease rows it writes (the CLI says "cli"; the daemon
    says "daemon" with its id); the default is a "library" holder."""
    global _process_holder
    _process_holder = holder


def process_holder() -> LeaseHolder:
    global _process_holder
    if _process_holder is None:
        _process_holder = LeaseHolder.this_process("library")
    return _process_holder


def reset_coordination() -> None:
    """Forget everything (the library context was stopped; its loop may be gone)."""
    _flows.clear()
