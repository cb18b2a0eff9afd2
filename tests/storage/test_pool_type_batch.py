"""A fresh connection introspects the array types a pass binds once, not per statement.

Why: asyncpg has no built-in codec for bytea[], int8range[] or vector[], so each one's
first use on a connection ran its recursive type query (a round trip and a 4-10 ms plan):
a one-file edit in a fresh process paid three, one for the tracking look-up by key, one
for the target's delete, one for its insert of vectors.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asyncpg.pool import PoolConnectionProxy
from pgvector import Vector

from cocod.storage.pool import open_pool


def _has_codec(conn: PoolConnectionProxy, oid: int) -> bool:
    """Whether the connection already holds a codec for ``oid`` (asyncpg's type cache)."""
    settings: Any = conn._con._protocol.get_settings()  # type: ignore[union-attr]
    return settings.get_data_codec(oid) is not None


async def _probe(url: str) -> tuple[bool, bool, bool, list[Any]]:
    pool = await open_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            vector_array = await conn.fetchval("SELECT 'vector[]'::regtype::oid")
            before = _has_codec(conn, 3927) or _has_codec(conn, vector_array)
            await conn.fetchval("SELECT cardinality($1::bytea[])", [b"a", b"b"])
            ranges = _has_codec(conn, 3927)
            vectors = _has_codec(conn, vector_array)
            # The batched codecs work: a range array and a vector array round-trip.
            row = await conn.fetchrow(
                "SELECT $1::int8range[] AS r, $2::vector[] AS v",
                [asyncpg_range(1, 5)],
                [Vector([1.0, 2.0])],
            )
            return before, ranges, vectors, [row["r"], [v.to_list() for v in row["v"]]]
    finally:
        await pool.close()


def asyncpg_range(lower: int, upper: int) -> Any:
    from asyncpg import Range

    return Range(lower, upper)


def test_the_first_array_statement_brings_the_other_array_codecs(database_url: str) -> None:
    before, ranges, vectors, values = asyncio.run(_probe(database_url))
    assert before is False
    assert ranges is True
    assert vectors is True
    assert values[0][0].lower == 1 and values[0][0].upper == 5
    assert values[1] == [[1.0, 2.0]]
