"""Whether a memo entry is still used is answered per entry, not per corpus.

Why: marking released entries (each commit) and collecting old marks (a fresh process's
pass) ask, for each entry, whether a tracking row of the flow still lists its key. When
the planner combined the GIN look-up with the flow's primary-key range it read the whole
range once per entry: a one-file edit at 5,000 files spent 65 ms collecting 109 entries.
The planner chose that plan on the benchmark's database (rows churned by many passes)
but not on this freshly loaded one, so this guards the bound rather than replaying it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from cocod.storage import internal_schema
from cocod.storage.memo_store import unreferenced

pytestmark = pytest.mark.anyio

OTHER_ROWS = 55000
ROWS_PER_FLOW = 5000
ORPHANS = 100


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


def _buffers(plan: object) -> int:
    """Shared pages the statement read (hit or read), summed over its top node."""
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]  # type: ignore[index]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


async def test_the_unused_check_reads_a_few_pages_per_entry_whatever_the_corpus(
    conn: asyncpg.Connection,
) -> None:
    await internal_schema.ensure_internal_schema(conn, "cocod")
    # As the 5,000-file corpus that showed it: the flow's rows (six memo keys and a
    # dozen target keys each) beside a larger flow that keeps no memo.
    await conn.execute(
        "INSERT INTO cocod.tracking (flow_id, source_id, source_key, target_keys, memo_keys, "
        "uuids) SELECT 1, 1, convert_to('f' || i, 'UTF8'), "
        "to_jsonb(ARRAY(SELECT md5(i || ':' || c) FROM generate_series(1, 12) c)), "
        "ARRAY[convert_to('1:m' || i, 'UTF8')] || ARRAY(SELECT sha256(convert_to("
        "i || ':' || c, 'UTF8')) FROM generate_series(1, 5) c), '{}' "
        f"FROM generate_series(1, {ROWS_PER_FLOW}) AS i"
    )
    await conn.execute(
        "INSERT INTO cocod.tracking (flow_id, source_id, source_key, target_keys, memo_keys, "
        "uuids) SELECT 2, 1, convert_to('f' || i, 'UTF8'), "
        "to_jsonb(ARRAY(SELECT md5(i || ':' || c) FROM generate_series(1, 4) c)), '{}', '{}' "
        f"FROM generate_series(1, {OTHER_ROWS}) AS i"
    )
    # Flow 1's memo: its rows' keys, and entries marked orphaned (half still used).
    await conn.execute(
        "INSERT INTO cocod.memo (flow_id, fp, value) SELECT 1, "
        f"convert_to('1:m' || i, 'UTF8'), 'v' FROM generate_series(1, {ROWS_PER_FLOW}) AS i"
    )
    await conn.execute(
        "INSERT INTO cocod.memo (flow_id, fp, value, orphaned_at) SELECT 1, "
        "convert_to('gone' || i, 'UTF8'), 'v', now() - interval '2 hours' "
        f"FROM generate_series(1, {ORPHANS // 2}) AS i"
    )
    await conn.execute(
        f"UPDATE cocod.memo SET orphaned_at = now() - interval '2 hours' "
        f"WHERE flow_id = 1 AND fp IN (SELECT convert_to('1:m' || i, 'UTF8') "
        f"FROM generate_series(1, {ORPHANS // 2}) AS i)"
    )
    await conn.execute("ANALYZE cocod.tracking")
    await conn.execute("ANALYZE cocod.memo")

    memo, tracking = '"cocod".memo', '"cocod".tracking'
    query = (
        f"SELECT count(*) FROM {memo} WHERE flow_id = $1 AND orphaned_at IS NOT NULL "
        f"AND {unreferenced(memo, tracking)}"
    )
    assert await conn.fetchval(query, 1) == ORPHANS // 2
    plan = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}", 1)
    # A few index and heap pages per entry (the flow's key range alone is ~60 pages).
    assert _buffers(plan) < 10 * ORPHANS, plan
