"""The heartbeat of every lease a daemon owns, in one statement per beat.

Why not each lease on its own session (:meth:`~cocod.storage.leases.FlowLease.heartbeat`):
with many owned instances, one round trip per lease per beat was a visible share of an
idle daemon's database CPU. The one statement refreshes a lease's row only where its epoch
is still current and its advisory lock is still granted — to its own session, since a take
bumps the epoch in the very statement that takes the lock — so what a lease learns is what
its own heartbeat told it: one not refreshed is marked lost. When the statement fails (the
pool cannot reach the database), each lease is asked on its own session, as before, so an
outage is judged by each lease's own connection.
"""

from __future__ import annotations

import contextlib

import anyio
import asyncpg
import structlog

from cocod.errors import CocodError, LeaseLostError
from cocod.flow.naming import quote_ident
from cocod.storage.leases import HEARTBEAT_TIMEOUT_S, LEASE_CLASSID, FlowLease
from cocod.storage.pool import Pool

log = structlog.get_logger(__name__)

_ERRORS = (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, CocodError)


def _sql(schema: str) -> str:
    return (
        "WITH held AS (SELECT objid FROM pg_locks WHERE locktype = 'advisory' "
        "AND classid = $1::int::oid AND objsubid = 2 AND granted AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())) "
        f"UPDATE {quote_ident(schema)}.leases AS le SET heartbeat_at = now() "
        "FROM unnest($2::bigint[], $3::bigint[]) AS h(flow_id, epoch) "
        "WHERE le.flow_id = h.flow_id AND le.epoch = h.epoch "
        "AND h.flow_id::oid IN (SELECT objid FROM held) RETURNING le.flow_id, le.epoch"
    )


async def heartbeat_leases(pool: Pool, schema: str, owned: list[FlowLease]) -> None:
    """Refresh every held lease of ``owned``; mark lost the ones that are not ours now."""
    leases = [lease for lease in owned if lease.is_held]
    if not leases:
        return
    try:
        with anyio.fail_after(HEARTBEAT_TIMEOUT_S):
            async with pool.acquire() as conn:
                rows = await conn.fetch(
                    _sql(schema),
                    LEASE_CLASSID,
                    [lease.flow_id for lease in leases],
                    [lease.epoch for lease in leases],
                )
    except _ERRORS as e:
        log.debug("cluster.lease_beat_failed", error=f"{type(e).__name__}: {e}")
        for lease in leases:
            with contextlib.suppress(LeaseLostError):
                await lease.heartbeat()
        return
    refreshed = {(int(r[0]), int(r[1])) for r in rows}
    for lease in leases:
        if (lease.flow_id, lease.epoch) not in refreshed and lease.is_held:
            lease.mark_lost(
                f"its heartbeat found epoch {lease.epoch} no longer current or its lock no "
                "longer held (another process took it over, or its session ended)"
            )


__all__ = ["heartbeat_leases"]
