"""A pass that finds the flow's memo empty (an initial index) skips lookups that can only
miss, and still finds what it wrote itself.

Why: an initial index of 5,000 files sent ~280 memo lookups, every one a miss. Real
database: an entry the pass did not write is inserted behind its back to show which
lookups went to the server (while a pass holds the lease, nothing else writes there).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from cocod.engine.interfaces import RowCommit, TrackedRow
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


async def _no_fence(conn: Connection) -> None:
    return None


async def _insert_behind(pool: asyncpg.Pool, fp: bytes) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO cocod.memo (flow_id, fp, value) VALUES (1, $1, 'theirs')", fp
        )


async def test_a_pass_that_found_the_memo_empty_looks_up_only_what_it_wrote(
    pool: asyncpg.Pool,
) -> None:
    base = state.PostgresStateStore(pool, "cocod", 1, {})
    view = base.with_fence(_no_fence)
    assert len(await view.load_listing_state(1, b"logic")) == 0  # nothing tracked, memo empty
    await _insert_behind(pool, b"unseen")
    assert await view.memo_lookup([b"unseen"]) == {}  # skipped: could only have missed

    await view.commit_rows(
        [RowCommit(1, "a.md", TrackedRow((1, 2), b"c", b"logic"), memo_entries={b"m": b"v"})]
    )
    assert await view.memo_lookup([b"m", b"unseen"]) == {b"m": b"v"}  # its own: queried

    # A pass that did not find the memo empty (it never asked) looks everything up, and so
    # does the store outside any pass.
    later = base.with_fence(_no_fence)
    assert await later.memo_lookup([b"unseen"]) == {b"unseen": b"theirs"}
    assert await base.memo_lookup([b"unseen"]) == {b"unseen": b"theirs"}


async def test_a_pass_over_a_memo_with_entries_looks_everything_up(pool: asyncpg.Pool) -> None:
    await _insert_behind(pool, b"old")
    view = state.PostgresStateStore(pool, "cocod", 1, {}).with_fence(_no_fence)
    assert len(await view.load_listing_state(1, b"logic")) == 0
    await _insert_behind(pool, b"new")
    assert await view.memo_lookup([b"old", b"new"]) == {b"old": b"theirs", b"new": b"theirs"}


async def test_commits_of_a_concurrent_pass_are_found(pool: asyncpg.Pool) -> None:
    """Two sources of one flow index at once: each pass finds the other's entries."""
    base = state.PostgresStateStore(pool, "cocod", 1, {})
    first, second = base.with_fence(_no_fence), base.with_fence(_no_fence)
    for view, source_id in ((first, 1), (second, 2)):
        assert len(await view.load_listing_state(source_id, b"logic")) == 0
    await second.commit_rows(
        [RowCommit(2, "b.md", TrackedRow((1, 2), b"c", b"logic"), memo_entries={b"s": b"2"})]
    )
    assert await first.memo_lookup([b"s"]) == {b"s": b"2"}
