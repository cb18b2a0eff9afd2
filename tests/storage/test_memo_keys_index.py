"""The memo keys' GIN index has its pending list off, on new databases and old ones.

Why it matters: with ``fastupdate`` on, a tracking write adds its memo keys to GIN's
pending list instead of the tree, and every ``@>`` lookup (each release's orphan mark,
each collection) scans that whole list until a vacuum merges it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from cocod.storage import internal_schema

pytestmark = pytest.mark.anyio


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


async def _options(conn: asyncpg.Connection) -> list[str] | None:
    found = await conn.fetchval(
        "SELECT reloptions FROM pg_class WHERE oid = 'cocod.tracking_memo_keys'::regclass"
    )
    return None if found is None else list(found)


async def test_a_new_database_gets_the_index_with_its_pending_list_off(
    conn: asyncpg.Connection,
) -> None:
    assert await internal_schema.ensure_internal_schema(conn, "cocod") is True
    assert await _options(conn) == ["fastupdate=off"]
    assert await internal_schema.ensure_internal_schema(conn, "cocod") is False


async def test_an_old_index_is_migrated_once_and_its_pending_entries_merged(
    conn: asyncpg.Connection,
) -> None:
    await internal_schema.ensure_internal_schema(conn, "cocod")
    # As an older cocod left it: the default (pending list on), with entries pending.
    await conn.execute("DROP INDEX cocod.tracking_memo_keys")
    await conn.execute("CREATE INDEX tracking_memo_keys ON cocod.tracking USING gin (memo_keys)")
    await conn.execute(
        "INSERT INTO cocod.tracking (flow_id, source_id, source_key, target_keys, memo_keys, "
        "uuids) SELECT 1, 1, convert_to('f' || i, 'UTF8'), '{}', "
        "ARRAY[convert_to('m' || i, 'UTF8')], '{}' FROM generate_series(1, 50) AS i"
    )
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
    pending = "SELECT pending_tuples FROM pgstatginindex('cocod.tracking_memo_keys')"
    assert await conn.fetchval(pending) > 0

    assert await internal_schema.ensure_internal_schema(conn, "cocod") is True
    assert await _options(conn) == ["fastupdate=off"]
    assert await conn.fetchval(pending) == 0
    assert await internal_schema.ensure_internal_schema(conn, "cocod") is False
