"""Driver errors come out of the pool as cocod errors, mapped once (real Postgres)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from cocod.errors import DatabaseError, DatabaseUnavailableError
from cocod.storage.pool import MappedPool, ensure_vector_extension, open_pool

T = TypeVar("T")


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    return asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word (a frozen Postgres)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    for s in accepted:
        s.close()
    listener.close()


def test_a_stopped_server_is_unavailable_with_the_url_and_what_to_do() -> None:
    url = f"postgresql://cocod:secret@127.0.0.1:{_free_port()}/nothing"
    with pytest.raises(DatabaseUnavailableError) as caught:
        run(lambda: open_pool(url))
    message = str(caught.value)
    assert "cannot be reached" in message and "ConnectionRefusedError" in message
    assert "secret" not in message and "cocod:***@127.0.0.1" in message
    assert "\n" not in message
    assert isinstance(caught.value.__cause__, OSError)


def test_a_stopped_local_server_is_unavailable(tmp_path: Path) -> None:
    """A stopped Postgres leaves no socket file in its socket folder."""
    url = f"postgresql://postgres@/postgres?host={tmp_path}"
    with pytest.raises(DatabaseUnavailableError, match="cannot be reached") as caught:
        run(lambda: open_pool(url))
    assert isinstance(caught.value.__cause__, OSError)


def test_a_frozen_server_times_out_instead_of_hanging(silent_server: int) -> None:
    url = f"postgresql://cocod@127.0.0.1:{silent_server}/nothing"
    with pytest.raises(DatabaseUnavailableError, match="cannot be reached"):
        run(lambda: ensure_vector_extension(url, connect_timeout=0.5))


def test_a_wrong_database_name_is_a_configuration_error(database_url: str) -> None:
    base, _, query = database_url.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/no_such_database?{query}"
    with pytest.raises(DatabaseError, match="check the user, password and database") as caught:
        run(lambda: open_pool(url))
    assert not isinstance(caught.value, DatabaseUnavailableError)


def _with_pool(url: str, body: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    async def main() -> T:
        pool = await open_pool(url, min_size=1, max_size=1)
        assert isinstance(pool, MappedPool) and isinstance(pool, asyncpg.Pool)
        try:
            return await body(pool)
        finally:
            pool.terminate()

    return asyncio.run(main())


async def _terminate(url: str, pid: int) -> None:
    admin = await asyncpg.connect(url)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


def test_a_terminated_pooled_connection_is_unavailable(database_url: str) -> None:
    async def body(pool: asyncpg.Pool) -> Any:
        with pytest.raises(DatabaseUnavailableError) as caught:
            async with pool.acquire() as conn:
                await _terminate(database_url, await conn.fetchval("SELECT pg_backend_pid()"))
                await conn.fetchval("SELECT 1")
        cause = caught.value.__cause__
        assert isinstance(
            cause,
            asyncpg.ConnectionDoesNotExistError
            | asyncpg.AdminShutdownError
            | asyncpg.InterfaceError
            | asyncpg.InternalClientError  # the FATAL raced the next statement
            | ConnectionError,
        ), repr(cause)
        # The pool replaces the lost connection. An idle pooled connection terminated
        # behind its back fails its next use as unavailable (or the pool noticed first and
        # it works): either way the retry the error asks for succeeds.
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        await _terminate(database_url, pid)
        for _attempt in range(2):
            try:
                async with pool.acquire() as conn:
                    return await conn.fetchval("SELECT 41 + 1")
            except DatabaseUnavailableError:
                continue
        raise AssertionError("the pool did not replace its lost connection")

    assert _with_pool(database_url, body) == 42


def test_a_connection_lost_inside_a_transaction_is_unavailable(database_url: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        with pytest.raises(DatabaseUnavailableError):
            async with pool.acquire() as conn, conn.transaction():
                await _terminate(database_url, await conn.fetchval("SELECT pg_backend_pid()"))
                await conn.execute("SELECT 1")

    _with_pool(database_url, body)


def test_a_rejected_statement_is_a_database_error_not_unavailable(database_url: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        with pytest.raises(DatabaseError) as caught:
            async with pool.acquire() as conn:
                await conn.execute("SELEC 1")
        assert not isinstance(caught.value, DatabaseUnavailableError)
        assert "SQLSTATE 42601" in str(caught.value) and "syntax error" in str(caught.value)
        assert isinstance(caught.value.__cause__, asyncpg.PostgresSyntaxError)
        with pytest.raises(DatabaseError, match="SQLSTATE 42601"):
            await pool.execute("SELEC 2")  # the pool's own shortcuts go through acquire()

    _with_pool(database_url, body)


def test_errors_that_are_not_the_drivers_pass_through_unchanged(database_url: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        with pytest.raises(FileNotFoundError):
            async with pool.acquire():
                raise FileNotFoundError("a file, not the database")
        with pytest.raises(KeyError):
            async with pool.acquire() as conn, conn.transaction():
                raise KeyError("ours")

    _with_pool(database_url, body)


def test_a_closed_pool_is_unavailable(database_url: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        await pool.close()
        with pytest.raises(DatabaseUnavailableError, match="closed"):
            async with pool.acquire():
                pass
        with pytest.raises(DatabaseUnavailableError):
            await pool.acquire()

    _with_pool(database_url, body)


def test_the_pool_creates_pgvector_on_a_fresh_database(database_url: str) -> None:
    """The first connection's initialiser creates the extension and registers its codec."""
    import numpy as np

    async def main() -> tuple[int, list[float]]:
        before = await asyncpg.connect(database_url)
        try:
            await before.execute("DROP EXTENSION IF EXISTS vector")
        finally:
            await before.close()
        pool = await open_pool(database_url, min_size=2, max_size=2)
        try:
            async with pool.acquire() as conn:
                count = await conn.fetchval(
                    "SELECT count(*) FROM pg_extension WHERE extname = 'vector'"
                )
                value = await conn.fetchval("SELECT $1::vector", np.array([1.0, 2.0]))
            return int(count), [float(x) for x in value.to_list()]
        finally:
            await pool.close()

    assert run(main) == (1, [1.0, 2.0])
