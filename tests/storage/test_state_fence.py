"""A store built with a fence runs it first in each write transaction; a fence that
raises rolls the transaction back before anything is written (the lease's hook)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from cocod.engine.interfaces import RowCommit, TrackedRow
from cocod.errors import LeaseLostError
from cocod.storage import internal_schema, state
from cocod.storage.pool import Connection, open_pool

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await open_pool(database_url, max_size=2)
    async with p.acquire() as conn:
        await internal_schema.ensure_internal_schema(conn, "cocod")
    try:
        yield p
    finally:
        await p.close()


async def test_the_fence_runs_inside_each_write_transaction(pool: asyncpg.Pool) -> None:
    seen: list[bool] = []

    async def fence(conn: Connection) -> None:
        seen.append(conn.is_in_transaction())

    store = state.PostgresStateStore(pool, "cocod", 1, {}, fence=fence)
    await store.commit_rows([RowCommit(1, "a.md", TrackedRow((1, 2), b"c", b"l"))])
    async with pool.acquire() as conn:  # an orphan that is due, so collection writes
        await conn.execute(
            "INSERT INTO cocod.memo (flow_id, fp, value, orphaned_at) "
            "VALUES (1, 'old', 'v', now() - interval '2 hours')"
        )
    assert await store.collect_memo_garbage(3600) == 1
    assert seen == [True, True]
    assert set(await store.load_ordinals(1)) == {"a.md"}


async def test_collection_with_nothing_due_opens_no_transaction(pool: asyncpg.Pool) -> None:
    """Most passes have no orphan past its retention: they skip the fenced transaction
    (three round trips) instead of running it to delete nothing."""
    seen: list[bool] = []

    async def fence(conn: Connection) -> None:
        seen.append(conn.is_in_transaction())

    store = state.PostgresStateStore(pool, "cocod", 1, {}, fence=fence)
    async with pool.acquire() as conn:  # one young orphan, and one of another flow
        await conn.execute(
            "INSERT INTO cocod.memo (flow_id, fp, value, orphaned_at) VALUES "
            "(1, 'young', 'v', now()), (2, 'other', 'v', now() - interval '2 hours')"
        )
    assert await store.collect_memo_garbage(3600) == 0
    assert await store.collect_memo_garbage(float("inf")) == 0
    assert seen == []
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM cocod.memo") == 2
    assert await store.collect_memo_garbage(0) == 1  # now the young one is due
    assert seen == [True]


async def test_a_failing_fence_writes_nothing(pool: asyncpg.Pool) -> None:
    async def lost(conn: Connection) -> None:
        await conn.execute("SELECT 1")
        raise LeaseLostError("another process took the flow over")

    store = state.PostgresStateStore(pool, "cocod", 1, {}, fence=lost)
    with pytest.raises(LeaseLostError):
        await store.commit_rows(
            [RowCommit(1, "a.md", TrackedRow((1, 2), b"c", b"l"), memo_entries={b"k": b"v"})]
        )
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM cocod.tracking") == 0
        assert await conn.fetchval("SELECT count(*) FROM cocod.memo") == 0
