"""How the runtime takes a flow's lease for a pass, setup or drop.

The lease itself is :mod:`cocod.storage.leases`; who shares it within a process is
:meth:`cocod.runtime.coordination.FlowCoordination.lease`. What is here is the glue
:class:`~cocod.runtime.execution.FlowExecution` uses for passes, setup and drop. A lost
lease needs no translation: the committer re-raises it as it is, stopping the pass.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from cocod.runtime.context import LibraryContext
from cocod.runtime.coordination import process_holder
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
