"""The flow lease: one holder at a time, a growing epoch, and the fence in write transactions.

Real PostgreSQL (the test database), real sessions: losing the lease is a real
``pg_terminate_backend`` of the holder's session, not a simulated flag.
"""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from cocod.storage.leases import (
    LEASE_CLASSID,
    FlowBusyError,
    FlowLease,
    LeaseHolder,
    LeaseLostError,
    acquire,
    current_holder,
    try_acquire,
)

FLOW_ID = 7


def _holder(pid: int, daemon: str | None = None) -> LeaseHolder:
    return LeaseHolder("host-a", pid, daemon, "daemon" if daemon else "cli")


async def _lock_backend(conn: asyncpg.Connection, flow_id: int) -> int | None:
    """The backend pid of the session holding the flow's advisory lock."""
    found = await conn.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::int::oid "
        "AND objid = $2::int::oid AND objsubid = 2 AND granted",
        LEASE_CLASSID,
        flow_id,
    )
    return None if found is None else int(found)


async def _write_log_table(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS wlog (epoch bigint, holder text, at timestamptz "
        "DEFAULT clock_timestamp())"
    )


async def _fenced_write(conn: asyncpg.Connection, lease: FlowLease) -> None:
    async with conn.transaction():
        await lease.check(conn)
        await conn.execute(
            "INSERT INTO wlog (epoch, holder) VALUES (current_setting('cocod.lease_epoch')"
            "::bigint, current_setting('cocod.lease_holder'))"
        )


@pytest.mark.anyio
async def test_one_holder_at_a_time_and_each_acquisition_bumps_the_epoch(
    database_url: str,
) -> None:
    first = await try_acquire(database_url, FLOW_ID, _holder(101, "d1"))
    assert first is not None and first.epoch == 1
    assert await try_acquire(database_url, FLOW_ID, _holder(202)) is None
    conn = await asyncpg.connect(database_url)
    try:
        assert await current_holder(conn, FLOW_ID) == _holder(101, "d1")
        await first.release()
        assert await current_holder(conn, FLOW_ID) is None  # the row stays, the lock is gone
        second = await try_acquire(database_url, FLOW_ID, _holder(202))
        assert second is not None and second.epoch == 2
        assert await current_holder(conn, FLOW_ID) == _holder(202)
        await second.release()
        rows = await conn.fetch("SELECT epoch, holder_pid FROM cocod.leases")
        assert [(r[0], r[1]) for r in rows] == [(2, 202)]
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_waiting_names_the_holder_once_then_gives_up_with_a_typed_error(
    database_url: str,
) -> None:
    held = await try_acquire(database_url, FLOW_ID, _holder(101, "d1"))
    assert held is not None
    heard: list[LeaseHolder] = []
    try:
        with pytest.raises(FlowBusyError) as caught:
            await acquire(database_url, FLOW_ID, _holder(202), wait=0.6, on_wait=heard.append)
        assert heard == [_holder(101, "d1")]
        assert caught.value.holder == _holder(101, "d1")
        assert "host host-a pid 101 (daemon d1)" in str(caught.value)

        async def release_soon() -> None:
            await anyio.sleep(0.3)
            await held.release()

        async with anyio.create_task_group() as tg:
            tg.start_soon(release_soon)
            lease = await acquire(database_url, FLOW_ID, _holder(202), wait=30)
        assert lease.epoch == 2
        await lease.release()
    finally:
        await held.release()


@pytest.mark.anyio
async def test_a_terminated_session_sets_lost_and_the_fence_refuses_every_later_write(
    database_url: str,
) -> None:
    old = await try_acquire(database_url, FLOW_ID, _holder(101, "d1"))
    assert old is not None
    conn = await asyncpg.connect(database_url)
    try:
        await _write_log_table(conn)
        await _fenced_write(conn, old)
        backend = await _lock_backend(conn, FLOW_ID)
        assert backend is not None
        await conn.execute("SELECT pg_terminate_backend($1)", backend)
        with anyio.fail_after(10):
            await old.lost.wait()
        new = await acquire(database_url, FLOW_ID, _holder(202), wait=10)
        assert new.epoch == 2
        await _fenced_write(conn, new)
        with pytest.raises(LeaseLostError):
            await _fenced_write(conn, old)
        # Even when the old holder has not noticed (its flag cleared, as a SIGSTOPped
        # process would be), the epoch in the database refuses it.
        old.lost = anyio.Event()
        with pytest.raises(LeaseLostError):
            await _fenced_write(conn, old)
        with pytest.raises(LeaseLostError):
            await old.heartbeat()
        await new.heartbeat()
        rows = await conn.fetch("SELECT epoch, holder FROM wlog ORDER BY at")
        assert [(r[0], r[1]) for r in rows] == [(1, "d1"), (2, "")]
        await new.release()
    finally:
        await conn.close()


@pytest.mark.anyio
async def test_the_bump_waits_for_an_old_holder_commit_in_flight(database_url: str) -> None:
    """The timing argument: a takeover's epoch bump waits for the FOR SHARE of a write
    transaction that passed its check, so the old write lands wholly before the new epoch."""
    old = await try_acquire(database_url, FLOW_ID, _holder(101))
    assert old is not None
    writer = await asyncpg.connect(database_url)
    admin = await asyncpg.connect(database_url)
    try:
        await _write_log_table(admin)
        tx = writer.transaction()
        await tx.start()
        await old.check(writer)  # passed: holds FOR SHARE on the lease row
        backend = await _lock_backend(admin, FLOW_ID)
        await admin.execute("SELECT pg_terminate_backend($1)", backend)
        with anyio.fail_after(10):
            await old.lost.wait()
        taken: list[FlowLease] = []

        async def take_over() -> None:
            taken.append(await acquire(database_url, FLOW_ID, _holder(202), wait=30))

        async with anyio.create_task_group() as tg:
            tg.start_soon(take_over)
            await anyio.sleep(0.5)
            assert not taken  # the lock is free, but the bump waits for the open write
            await writer.execute(
                "INSERT INTO wlog (epoch, holder) VALUES "
                "(current_setting('cocod.lease_epoch')::bigint, 'old')"
            )
            await tx.commit()
        new = taken[0]
        await _fenced_write(admin, new)
        rows = await admin.fetch("SELECT epoch FROM wlog ORDER BY at")
        assert [r[0] for r in rows] == [1, 2]
        await new.release()
    finally:
        await writer.close()
        await admin.close()


@pytest.mark.anyio
async def test_a_flow_name_resolves_to_its_id_and_an_unknown_one_is_not_set_up(
    database_url: str,
) -> None:
    from cocod.errors import SetupOutOfDateError

    with pytest.raises(SetupOutOfDateError):
        await try_acquire(database_url, "NoSuchFlow", _holder(1))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "CREATE SCHEMA IF NOT EXISTS cocod; CREATE TABLE IF NOT EXISTS "
            "cocod.setup_metadata (flow_name text, resource text, state jsonb, "
            "PRIMARY KEY (flow_name, resource))"
        )
        await conn.execute(
            "INSERT INTO cocod.setup_metadata VALUES ('F', 'flow', '{\"flow_id\": 42}')"
        )
        lease = await try_acquire(database_url, "F", _holder(1))
        assert lease is not None and lease.flow_id == 42
        await lease.release()
    finally:
        await conn.close()
