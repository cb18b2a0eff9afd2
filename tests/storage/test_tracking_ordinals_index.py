"""The covering index a full pass's listing diff reads, created on new and old databases.

Why it matters: comparing a 50,000-file listing with the tracking reads (key, ordinal,
logic fingerprint) of every tracked row; from the table that is every page of the rows
(their target keys and memo keys make them wide), from this index a tenth of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from cocod.engine.interfaces import TrackedRow
from cocod.storage import internal_schema, state
from cocod.storage.pool import open_pool


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def _has_index(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('cocod.tracking_ordinals') IS NOT NULL"))


@pytest.mark.anyio
async def test_a_database_set_up_before_the_index_gets_it_once(
    conn: asyncpg.Connection,
) -> None:
    assert await internal_schema.ensure_internal_schema(conn, "cocod") is True
    assert await _has_index(conn)
    assert await internal_schema.ensure_internal_schema(conn, "cocod") is False

    await conn.execute("DROP INDEX cocod.tracking_ordinals")  # as an older cocod left it
    assert await internal_schema.ensure_internal_schema(conn, "cocod") is True
    assert await _has_index(conn)
    assert await internal_schema.ensure_internal_schema(conn, "cocod") is False


@pytest.mark.anyio
async def test_the_listing_diff_reads_the_index_not_the_rows(
    conn: asyncpg.Connection, database_url: str
) -> None:
    await internal_schema.ensure_internal_schema(conn, "cocod")
    pool = await open_pool(database_url, max_size=2)
    try:
        store = state.PostgresStateStore(pool, "cocod", 1, {})
        wide = {"chunks": {"target": "t", "keys": {f'["k{i}"]': "f" * 32 for i in range(40)}}}
        listed = {f"d{i % 7}/f{i}.md": (1_000 + i, 10 + i) for i in range(3000)}
        await store.commit_rows(
            [
                state.RowCommit(1, key, TrackedRow(ordinal, b"c", b"logic", wide))
                for key, ordinal in listed.items()
            ]
        )
        diff = await store.diff_listing(1, listed, b"logic")
        assert (diff.changed, diff.gone) == ([], [])
        # Covering: every column the diff reads is in the index, so once autovacuum has
        # marked the pages visible the plan never touches the wide rows. (Whether the
        # planner prefers it depends on that visibility, so the seq scan is ruled out.)
        await conn.execute("SET enable_seqscan = off")
        args = [1, 1, *store.diff_listing_args(listed), b"logic"]
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + store.diff_listing_sql, *args))
        assert "Index Only Scan using tracking_ordinals" in plan, plan
    finally:
        await pool.close()
