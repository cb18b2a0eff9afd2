"""How the runtime takes a flow's lease for a pass, setup or drop.

The lease itself is :mod:`cocod.storage.leases`; who shares it within a process is
:meth:`cocod.runtime.coordination.FlowCoordination.lease`. What is here is the glue
:class:`~cocod.runtime.execution.FlowExecution` uses for passes, setup and drop, and
:class:`LeaseKeeper`, with which a live updater holds one lease for its whole run. A lost
lease needs no translation: the committer re-raises it as it is, stopping the pass.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import asyncpg
import structlog

from cocod.errors import (
    CocodError,
    DatabaseError,
    DatabaseUnavailableError,
    FlowBusyError,
    LeaseLostError,
)
from cocod.runtime.context import LibraryContext
from cocod.runtime.coordination import Backoff, coordination_for, process_holder
from cocod.runtime.updater_status import is_database_unavailable
from cocod.storage import leases
from cocod.storage.leases import FlowLease, LeaseHolder

log = structlog.get_logger(__name__)

OnWait = Callable[[LeaseHolder], None]
"""Told once whom a lease acquisition waits for (the CLI prints it)."""


def log_waiting(full_name: str) -> OnWait:
    """The library's default: one warning (shown by default) naming the holder."""

    def say(holder: LeaseHolder) -> None:
        log.warning(
            "flow.lease.waiting",
            flow=full_name,
            holder=holder.describe(),
            hint="another process is writing this flow; this one waits for it to finish",
        )

    return say


async def take_lease(
    ctx: LibraryContext,
    flow: str | int,
    full_name: str,
    *,
    wait: float | None,
    on_wait: OnWait | None,
) -> FlowLease:
    """The flow's lease on a connection of its own, for this process's holder."""
    return await leases.acquire(
        await ctx.open_database(),
        flow,
        process_holder(),
        schema=ctx.schema,
        wait=wait,
        on_wait=on_wait or log_waiting(full_name),
    )


_TAKE_ERRORS = (CocodError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
HELD_LONG_S = 30.0
"""A lease held this long before it was lost resets the retake backoff."""
BATCH_TAKE_ATTEMPTS = 4
"""A batch keeper's tries in a row (takes that failed, leases lost) before it gives up:
0.5 + 1 + 2 s of backoff, enough for a database restart, not for an outage."""


class LeaseKeeper:
    """Holds a flow's lease for a whole live updater run, not one per pass.

    Why: a pass that takes its own lease opens a connection and bumps the epoch each
    time (a watcher burst makes dozens of passes), and between two passes another
    process could slip in. The keeper takes the lease once and registers it as the
    flow's :attr:`~cocod.runtime.coordination.FlowCoordination.held_lease`, so every pass
    (and any other write of this process) writes under it; every write transaction is
    still fenced by its epoch.

    ``on_held(False)`` is called first thing when the lease is lost (its session died,
    or a newer epoch refused a write), so the updater stops its passes before anything
    else runs; the keeper then gives the dead lease back, waits its backoff, and retakes
    the lease — waiting for whoever holds it meanwhile (named in the log and in
    :attr:`waiting_for`) — and calls ``on_held(True)`` once it holds it again.

    ``batch`` (an updater that runs one pass and returns) bounds all of that, as a
    caller waiting for one update expects: it gives up after :data:`BATCH_TAKE_ATTEMPTS`
    tries in a row — raising :class:`~cocod.errors.DatabaseUnavailableError` naming the
    flow — and a lost lease is retaken only if nobody else took it meanwhile (else
    :class:`~cocod.errors.LeaseLostError` names who did). The first take still waits for
    another holder, as ``Flow.update()`` does.
    """

    def __init__(
        self,
        ctx: LibraryContext,
        full_name: str,
        on_held: Callable[[bool], None],
        on_take_failed: Callable[[Exception], None] = lambda e: None,
        *,
        batch: bool = False,
    ) -> None:
        self.ctx = ctx
        self.full_name = full_name
        self.on_held = on_held
        self.on_take_failed = on_take_failed
        """Told each failed attempt (the updater shows an unreachable database in status)."""
        self.batch = batch
        self.lease: FlowLease | None = None
        self.waiting_for: LeaseHolder | None = None
        """Who holds the lease while this keeper waits for it (None when not waiting)."""
        self.acquisitions = 0

    def _on_wait(self, holder: LeaseHolder) -> None:
        self.waiting_for = holder
        log_waiting(self.full_name)(holder)

    async def run(self) -> None:
        """Hold the lease until cancelled, retaking it whenever it is lost (batch: raise
        once that fails too often)."""
        coordination = coordination_for(self.full_name)
        backoff = Backoff(first=0.5, cap=30.0)
        lost_reason = ""  # why the last lease was lost (batch: the retake must not wait)
        try:
            while True:
                try:
                    lease = await take_lease(
                        self.ctx,
                        self.full_name,
                        self.full_name,
                        wait=0.0 if self.batch and lost_reason else None,
                        on_wait=self._on_wait,
                    )
                except _TAKE_ERRORS as e:  # the database is down, the flow not set up yet
                    self.on_take_failed(e)
                    if self.batch:
                        self._give_up_if_batch(e, backoff.failures + 1, lost_reason)
                    delay = backoff.next_delay()
                    log.warning(
                        "flow.lease.take_failed",
                        flow=self.full_name,
                        error=str(e),
                        retry_in=round(delay, 2),
                    )
                    await anyio.sleep(delay)
                    continue
                self.lease, self.waiting_for = lease, None
                self.acquisitions += 1
                coordination.held_lease = lease
                held_at = anyio.current_time()
                log.info("flow.lease.held", flow=self.full_name, epoch=lease.epoch)
                self.on_held(True)
                await lease.lost.wait()
                self.on_held(False)  # stop the passes before anything else
                if coordination.held_lease is lease:
                    coordination.held_lease = None
                await lease.release()
                lost_reason = lease.lost_reason or "it was lost"
                if anyio.current_time() - held_at >= HELD_LONG_S:
                    backoff.reset()
                if self.batch and backoff.failures + 1 >= BATCH_TAKE_ATTEMPTS:
                    raise LeaseLostError(
                        f"the batch update of flow {self.full_name!r} lost the flow's lease "
                        f"{backoff.failures + 1} times in a row (last: {lost_reason}); "
                        "nothing more is written - check the database and run it again"
                    )
                delay = backoff.next_delay()
                log.warning(
                    "flow.lease.retaking",
                    flow=self.full_name,
                    reason=lease.lost_reason,
                    retry_in=round(delay, 2),
                    hint="nothing is written until this process holds the lease again",
                )
                await anyio.sleep(delay)
        finally:
            lease_now = self.lease
            if lease_now is not None:
                if coordination.held_lease is lease_now:
                    coordination.held_lease = None
                await lease_now.release()  # shielded, within its own deadline

    def _give_up_if_batch(self, error: Exception, tries: int, lost_reason: str) -> None:
        """Raise the typed error that ends a batch updater, unless one more try may help."""
        after = f" after it lost it ({lost_reason})" if lost_reason else ""
        if isinstance(error, FlowBusyError):  # only when retaking a lost lease (wait=0)
            who = error.holder.describe() if error.holder is not None else "another process"
            raise LeaseLostError(
                f"the batch update of flow {self.full_name!r} lost the flow's lease "
                f"({lost_reason}), and {who} holds it now; what this update committed "
                "stays - run it again once that process is done"
            ) from error
        if not is_database_unavailable(error):
            if isinstance(error, CocodError):
                raise error  # a rule, not a blip (the flow is not set up, …): say it as is
            raise DatabaseError(
                f"the batch update of flow {self.full_name!r} could not take the flow's "
                f"lease{after}: {type(error).__name__}: {error}"
            ) from error
        if tries >= BATCH_TAKE_ATTEMPTS:
            raise DatabaseUnavailableError(
                f"the batch update of flow {self.full_name!r} could not take the flow's "
                f"lease{after}: the database could not be reached in {tries} tries "
                f"({error}); check that PostgreSQL is up, then run the update again"
            ) from error
