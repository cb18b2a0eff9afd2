"""The lease a flow is written under, for setup, drop and passes alike.

Every pass, setup and drop writes under the flow's lease (one writer per flow instance
across processes, see :mod:`cocod.storage.leases`). Setup and the update pass both need
it, by name or by flow id, so taking it lives here, apart from either: the lease a block
writes under is the owner's (a daemon's or a live updater's ``held_lease``), the one this
process already writes under, or one taken for the block.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from cocod.runtime.context import LibraryContext
from cocod.runtime.coordination import coordination_for
from cocod.runtime.leasing import OnWait, take_lease
from cocod.storage import internal_schema, leases
from cocod.storage.leases import FlowLease


def open_writing(
    ctx: LibraryContext,
    full_name: str,
    flow_id: int | None = None,
    *,
    wait: float | None = None,
    on_wait: OnWait | None = None,
) -> AbstractAsyncContextManager[FlowLease]:
    """The lease to write flow ``full_name`` under for a block: the owner's
    (``held_lease``), the one this process already writes under, or one taken now (by
    ``flow_id``, else by name), waiting up to ``wait`` s (None: as long as it takes) and
    telling ``on_wait`` whom it waits for; FlowBusyError names the holder when ``wait``
    ends."""
    target: str | int = full_name if flow_id is None else flow_id

    async def take() -> FlowLease:
        return await take_lease(ctx, target, full_name, wait=wait, on_wait=on_wait)

    return coordination_for(full_name).lease(take)


async def lease_flow_id(ctx: LibraryContext, full_name: str) -> int:
    """The id the flow's lease is keyed by: its setup record's, or one reserved for its
    first setup (so processes setting up one new flow together take one lease)."""
    pool = await ctx.pool()
    async with pool.acquire() as conn:
        await internal_schema.ensure_internal_schema(conn, ctx.schema)
        return await leases.reserve_flow_id(conn, ctx.schema, full_name)


__all__ = ["lease_flow_id", "open_writing"]
