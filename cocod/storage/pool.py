"""The asyncpg connection pool, with codecs for jsonb and pgvector types.

This is the adapter boundary for the driver: every error asyncpg (or the socket under it)
raises while connecting, acquiring, or running statements on a pooled connection comes
out of here mapped by :mod:`cocod.storage.db_errors` (retry with backoff, or a rejected
statement, with the driver error chained). The pool is a subclass of ``asyncpg.Pool``
whose ``acquire()`` applies :func:`map_asyncpg_errors`, so ``async with pool.acquire() as
conn:`` everywhere gets the mapping without knowing about it. URLs are read by
:mod:`cocod.storage.db_url`.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import asyncpg
import structlog
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

from cocod.storage.db_errors import (
    UNAVAILABLE_POSTGRES_ERRORS,
    map_asyncpg_errors,
    translate_asyncpg_error,
    unavailable_error,
)
from cocod.storage.db_url import connect_arguments, redact, with_credentials

log = structlog.get_logger(__name__)

Pool = asyncpg.Pool
Connection = asyncpg.Connection | PoolConnectionProxy
"""A plain connection or one borrowed from the pool: both run queries the same way."""

CONNECT_TIMEOUT = 10.0
"""Seconds one connection attempt may take, so a frozen server cannot hang start-up."""


class _MappedAcquireContext(PoolAcquireContext):
    """``pool.acquire()``: maps errors while acquiring and inside the ``async with``."""

    __slots__ = ()

    async def __aenter__(self) -> PoolConnectionProxy:
        with map_asyncpg_errors(_url_of(self.pool), connecting=True):
            return await super().__aenter__()

    async def __aexit__(self, *exc_info: object) -> None:
        url = _url_of(self.pool)
        exc = exc_info[1] if len(exc_info) > 1 else None
        # Whether the server ended this connection, read before release: then any driver
        # error of the block ("another operation is in progress", "released back to the
        # pool" from a detached proxy) is a lost connection, not a rejected statement.
        is_lost = isinstance(exc, Exception) and _is_driver_error(exc) and _is_lost(self.connection)
        with map_asyncpg_errors(url):
            await super().__aexit__(*exc_info)  # releases the connection
        if not isinstance(exc, Exception):
            return
        if is_lost:
            raise unavailable_error(f" at {redact(url)}" if url else "", exc) from exc
        if (mapped := translate_asyncpg_error(exc, url)) is not None:
            raise mapped from exc

    def __await__(self) -> Generator[Any, None, PoolConnectionProxy]:
        self.done = True
        return self._acquire_mapped().__await__()

    async def _acquire_mapped(self) -> PoolConnectionProxy:
        with map_asyncpg_errors(_url_of(self.pool), connecting=True):
            return await PoolAcquireContext(self.pool, self.timeout)


def _is_driver_error(error: BaseException) -> bool:
    return isinstance(
        error, asyncpg.PostgresError | asyncpg.InterfaceError | asyncpg.InternalClientError
    )


def _is_lost(connection: PoolConnectionProxy | None) -> bool:
    if connection is None:
        return True
    try:
        return connection.is_closed()
    except asyncpg.InterfaceError:  # detached: the pool already dropped it
        return True


def _url_of(pool: Any) -> str | None:
    return getattr(pool, "cocod_url", None)


class MappedPool(asyncpg.Pool):
    """An ``asyncpg.Pool`` whose connections raise only cocod errors (see the module)."""

    cocod_url: str | None = None

    def acquire(self, *, timeout: float | None = None) -> PoolAcquireContext:
        return _MappedAcquireContext(self, timeout)

    async def close(self) -> None:
        with map_asyncpg_errors(self.cocod_url):
            await super().close()


SESSION_SETUP = "SET synchronous_commit = off; SET jit = off"
"""Run once per pooled connection, both in one simple-protocol message (one round trip).

``synchronous_commit = off``: each row's target writes and tracking commit in one
transaction, so a transaction lost in a crash before its WAL reached disk is simply redone
by the next pass; the index stays consistent either way, and not waiting for the flush per
commit makes bulk indexing much faster (setup and drop turn it back on for their own
transactions). ``jit = off``: cocod's statements are short, and compiling a plan is paid
per statement (a full pass's listing diff crosses the default cost threshold at tens of
thousands of files); it also spares each asyncpg type introspection the statement that
restores the setting. A SET rather than startup-packet ``server_settings``, which
PgBouncer refuses for parameters it does not know."""


_VECTOR_TYPES_SQL = (
    "SELECT t.typname, t.oid, t.typelem AS elemtype, t.typtype AS kind "
    "FROM pg_catalog.pg_type AS t JOIN pg_catalog.pg_namespace AS ns "
    "ON ns.oid = t.typnamespace "
    "WHERE ns.nspname = 'public' "
    "AND t.typname IN ('vector', 'halfvec', 'sparsevec', '_vector', '_halfvec', '_sparsevec')"
)
"""pgvector's three types and their arrays in one query, in the shape of asyncpg's own
look-up by name (the arrays' OIDs feed :data:`BATCHED_ARRAY_OIDS`' batch)."""

BATCHED_ARRAY_OIDS = (1001, 3927, 1016, 1007, 1022, 1021, 1000, 3807, 1185, 2951)
"""bytea[], int8range[], int8[], int4[], float8[], float4[], bool[], jsonb[],
timestamptz[], uuid[]: the array types cocod's batched statements bind (asyncpg has no
built-in codec for them, so each one's first use on a connection costs an introspection
round trip and a plan of its recursive query, 4–10 ms each)."""


class CocodConnection(asyncpg.Connection):
    """A pooled connection whose codec set-up looks its types up once, and whose type
    introspections do not toggle JIT (its session has it off).

    ``register_vector`` registers three codecs, and asyncpg's ``set_type_codec`` looks
    each type up by name and then drops the connection's statement cache, so the
    look-up is prepared again: six round trips per connection, in every fresh process's
    first query. :func:`_init_connection` reads the three types in one query first and
    this answers ``set_type_codec``'s look-ups from it (asyncpg's own look-up for any
    other type, or when the types were not found).
    """

    _cocod_known_types: dict[str, Any] | None = None
    _cocod_batch_oids: list[int] | None = None
    """Array types to introspect with the first statement that needs any (then None)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # SESSION_SETUP turns JIT off for the session, so asyncpg need not read and set
        # it around each type introspection (the first use of an array type, a composite:
        # one round trip fewer each time).
        caps = getattr(self, "_server_caps", None)
        if caps is not None and getattr(caps, "jit", False):
            self._server_caps = caps._replace(jit=False)

    async def _introspect_type(self, typename: str, schema: str) -> Any:
        known = self._cocod_known_types
        if known is not None and schema == "public" and typename in known:
            return known[typename]
        return await super()._introspect_type(typename, schema)  # type: ignore[misc]

    async def _introspect_types(self, typeoids: Any, timeout: Any) -> Any:  # noqa: ASYNC109
        """The first introspection also reads the array types the pass's other statements
        bind, so a one-file edit in a fresh process pays one introspection, not three
        (the look-up tracking rows by key, the target's delete, its insert of vectors).
        A no-op pass binds no arrays and pays none."""
        batch, self._cocod_batch_oids = self._cocod_batch_oids, None
        if batch:
            asked = list(typeoids)
            typeoids = asked + [oid for oid in batch if oid not in asked]
        return await super()._introspect_types(typeoids, timeout)  # type: ignore[misc]


async def _init_connection(conn: asyncpg.Connection) -> None:
    """The session settings, and codecs for jsonb and, when pgvector is there, its types.

    The vector codecs are registered first and the extension looked up only when that
    fails, so an ordinary connection costs three round trips: the settings, the types'
    look-up (prepare and run) and nothing more.
    """
    await conn.execute(SESSION_SETUP)
    await conn.set_type_codec(
        "jsonb", encoder=_dumps, decoder=json.loads, schema="pg_catalog", format="text"
    )
    from pgvector.asyncpg import register_vector

    if isinstance(conn, CocodConnection):
        types = await conn.fetch(_VECTOR_TYPES_SQL)
        conn._cocod_known_types = {r["typname"]: r for r in types}
    try:
        await register_vector(conn)
    except ValueError as e:  # "unknown type: public.vector": not installed (here)
        if not str(e).startswith("unknown type"):
            raise
        has_vector = await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
        if not has_vector:
            has_vector = await _create_vector_extension(conn)
        if has_vector:  # created now (or installed outside public: that raises, as it did)
            await register_vector(conn)
            if isinstance(conn, CocodConnection):  # once per database: the new OIDs
                types = await conn.fetch(_VECTOR_TYPES_SQL)
    if isinstance(conn, CocodConnection):  # after the codecs their arrays build on
        vector_arrays = [r["oid"] for r in types if r["typname"].startswith("_")]
        conn._cocod_batch_oids = [*BATCHED_ARRAY_OIDS, *vector_arrays]


async def _create_vector_extension(conn: asyncpg.Connection) -> bool:
    """Create pgvector on the pool's first connection (it must exist before the codecs
    register); a database where we may not create it works without vectors."""
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return True
    except asyncpg.UniqueViolationError:
        return True  # another connection created it at the same moment
    except asyncpg.PostgresError as e:
        if isinstance(e, UNAVAILABLE_POSTGRES_ERRORS):
            raise
        log.warning("database.no_pgvector", error=str(e))
        return False


async def _keep_session(conn: asyncpg.Connection) -> None:
    """cocod never leaves session state behind (no LISTEN, locks, cursors or SET), so the
    default reset query on every release would be one wasted round trip per use."""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def connect(url: str, *, timeout: float = CONNECT_TIMEOUT) -> asyncpg.Connection:  # noqa: ASYNC109
    """One connection to ``url`` read as libpq reads it (see :func:`connect_arguments`);
    driver errors come out mapped."""
    dsn, kwargs = connect_arguments(url)
    with map_asyncpg_errors(url, connecting=True):
        return await asyncpg.connect(dsn, timeout=timeout, **kwargs)


async def ensure_vector_extension(url: str, *, connect_timeout: float = CONNECT_TIMEOUT) -> bool:
    """Create pgvector if we may; the pool's codecs need it to exist before they register."""
    conn = await connect(url, timeout=connect_timeout)
    try:
        with map_asyncpg_errors(url):
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                return True
            except asyncpg.PostgresError as e:
                if isinstance(e, UNAVAILABLE_POSTGRES_ERRORS):
                    raise
                log.warning("database.no_pgvector", error=str(e))
                return False
    finally:
        with map_asyncpg_errors(url):
            await conn.close(timeout=connect_timeout)


async def open_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, connect_timeout: float = CONNECT_TIMEOUT
) -> Pool:
    """Open the pool (a :class:`MappedPool`); each connection attempt times out.

    pgvector is created by the first connection's initialiser when missing, rather than
    on a connection of its own: one connection less per process start.
    """
    dsn, connect_kwargs = connect_arguments(url)
    pool = MappedPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        init=_init_connection,
        reset=_keep_session,
        loop=None,
        connection_class=CocodConnection,
        record_class=asyncpg.Record,
        timeout=connect_timeout,
        **connect_kwargs,
    )
    pool.cocod_url = url
    with map_asyncpg_errors(url, connecting=True):
        await pool
    return pool


__all__ = [
    "BATCHED_ARRAY_OIDS",
    "CONNECT_TIMEOUT",
    "SESSION_SETUP",
    "CocodConnection",
    "Connection",
    "MappedPool",
    "Pool",
    "connect",
    "connect_arguments",
    "ensure_vector_extension",
    "map_asyncpg_errors",
    "open_pool",
    "redact",
    "translate_asyncpg_error",
    "with_credentials",
]
