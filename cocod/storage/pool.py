"""The asyncpg connection pool, with codecs for jsonb and pgvector types."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy

from cocod.errors import DatabaseError

log = structlog.get_logger(__name__)

Pool = asyncpg.Pool
Connection = asyncpg.Connection | PoolConnectionProxy
"""A plain connection or one borrowed from the pool: both run queries the same way."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Each row's target writes and tracking commit in one transaction, so a transaction
    # lost in a crash before its WAL reached disk is simply redone by the next pass: the
    # index stays consistent either way, and not waiting for the flush per commit makes
    # bulk indexing much faster.
    await conn.execute("SET synchronous_commit = off")
    await conn.set_type_codec(
        "jsonb", encoder=_dumps, decoder=json.loads, schema="pg_catalog", format="text"
    )
    has_vector = await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
    if has_vector:
        from pgvector.asyncpg import register_vector

        await register_vector(conn)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """cocod never leaves session state behind (no LISTEN, locks, cursors or SET), so the
    default reset query on every release would be one wasted round trip per use."""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def ensure_vector_extension(url: str) -> bool:
    """Create pgvector if we may; the pool's codecs need it to exist before they register."""
    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError) as e:
        raise DatabaseError(f"cannot connect to the database at {_redact(url)}: {e}") from e
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return True
    except asyncpg.PostgresError as e:
        log.warning("database.no_pgvector", error=str(e))
        return False
    finally:
        await conn.close()


async def open_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> Pool:
    await ensure_vector_extension(url)
    try:
        pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, init=_init_connection, reset=_keep_session
        )
    except (OSError, asyncpg.PostgresError) as e:
        raise DatabaseError(f"cannot connect to the database at {_redact(url)}: {e}") from e
    assert pool is not None
    return pool


def _redact(url: str) -> str:
    """Hide a password in a URL before it reaches a log or an error message."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url
