"""A daemon heartbeats all the leases it owns in one statement per beat, not one round trip
per lease on each lease's session; a lease that is no longer its own is still found out.

Real PostgreSQL, a real :class:`~cocod.daemon.cluster.Cluster` owning three instances'
leases. Which session ran what is read from ``pg_stat_activity`` (each session's last
statement): the lease sessions must not have run a heartbeat.
"""

from __future__ import annotations

import anyio
import pytest

from cocod.daemon.cluster import Cluster
from cocod.runtime.bridge import bridge
from cocod.runtime.context import get_context
from cocod.storage.leases import LEASE_CLASSID
from tests.conftest import SqlHelper

pytestmark = pytest.mark.timeout(60)


def test_owned_leases_beat_in_one_statement_and_a_taken_over_one_is_marked_lost(
    sql: SqlHelper,
) -> None:
    async def main() -> tuple[list[bool], str, list[int]]:
        ctx = get_context()
        pool = await ctx.pool()
        cluster = Cluster(
            pool, await ctx.open_database(), ctx.schema, lease_timeout=3.0, weight=1, version="t"
        )
        cluster.count_instances = lambda: 3
        leases = [await cluster.take(name, f"flow_{name}") for name in ("a", "b", "c")]
        try:
            async with pool.acquire() as conn:
                await conn.execute(
                    "UPDATE cocod.leases SET heartbeat_at = now() - interval '1 hour'"
                )
                # Another process took b over (it bumped the epoch): b must learn it.
                await conn.execute(
                    "UPDATE cocod.leases SET epoch = epoch + 1 WHERE flow_id = $1",
                    leases[1].flow_id,
                )
            async with anyio.create_task_group() as tg:
                await tg.start(cluster.serve)  # it beats once before it reports started
                tg.cancel_scope.cancel()
            async with pool.acquire() as conn:
                fresh = await conn.fetch(
                    "SELECT flow_id FROM cocod.leases "
                    "WHERE heartbeat_at > now() - interval '1 minute' ORDER BY flow_id"
                )
                sessions = await conn.fetch(
                    "SELECT a.query FROM pg_stat_activity a JOIN pg_locks lk ON lk.pid = a.pid "
                    "WHERE lk.locktype = 'advisory' AND lk.classid = $1::int::oid "
                    "AND lk.objsubid = 2 AND lk.granted",
                    LEASE_CLASSID,
                )
            assert len(sessions) == 3  # every lease session still holds its lock
            # None of them ran a heartbeat: their last statement is still the take.
            assert all("pg_try_advisory_lock" in r[0] for r in sessions), sessions
            return (
                [lease.is_held for lease in leases],
                leases[1].lost_reason,
                [int(r[0]) for r in fresh],
            )
        finally:
            for lease in leases:
                await lease.release()

    held, reason, fresh = bridge.run(main())
    assert held == [True, False, True]
    assert "no longer current" in reason, reason
    flow_ids = sorted(int(str(r[0])) for r in sql.fetch("SELECT flow_id FROM cocod.leases"))
    assert fresh == [flow_ids[0], flow_ids[2]]  # a and c refreshed; b's row is not ours
