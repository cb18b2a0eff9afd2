"""Database URLs read as libpq reads them: query parameters override the authority part.

Against the real embedded server, reached through its Unix socket directory given as
``?host=``: asyncpg alone would try ``localhost:5432`` over TCP for these URLs, where the
embedded server does not listen.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import anyio
import pytest

import cocod as cocoindex
from cocod.errors import DatabaseError, DatabaseUnavailableError
from cocod.runtime.context import get_context
from cocod.storage.embedded import EmbeddedPostgres
from cocod.storage.pool import connect, connect_arguments, open_pool, redact
from tests.conftest import write
from tests.flows import paragraph_flow


def _socket_dir(server: EmbeddedPostgres) -> str:
    return str(server.socket_dir)


def _database(url: str) -> str:
    return urllib.parse.urlsplit(url).path.lstrip("/").split("?")[0]


async def _current(url: str) -> tuple[str, str]:
    conn = await connect(url)
    try:
        row = await conn.fetchrow("SELECT current_database(), current_user")
        assert row is not None
        return str(row[0]), str(row[1])
    finally:
        await conn.close()


def test_query_host_overrides_the_authority_host(
    postgres_server: EmbeddedPostgres, database_url: str
) -> None:
    db = _database(database_url)
    socket_dir = _socket_dir(postgres_server)
    url = f"postgresql://postgres@localhost/{db}?host={socket_dir}"
    assert anyio.run(_current, url) == (db, "postgres")


def test_query_dbname_user_and_port_override_the_authority(
    postgres_server: EmbeddedPostgres, database_url: str
) -> None:
    db = _database(database_url)
    port = postgres_server.socket_dir.glob(".s.PGSQL.*").__next__().name.rsplit(".", 1)[1]
    quoted = urllib.parse.quote(_socket_dir(postgres_server), safe="")
    # Authority says another user, host, port and database; the query wins for each.
    url = (
        f"postgresql://nobody@db.invalid:1/postgres?host={quoted}&port={port}"
        f"&user=postgres&dbname={db}&sslmode=disable"
    )
    assert anyio.run(_current, url) == (db, "postgres")


def test_the_pool_reads_the_url_the_same_way(
    postgres_server: EmbeddedPostgres, database_url: str
) -> None:
    db = _database(database_url)
    url = f"postgres://postgres@127.0.0.1:1/{db}?host={_socket_dir(postgres_server)}"

    async def main() -> str:
        pool = await open_pool(url, min_size=1, max_size=2, connect_timeout=5)
        try:
            async with pool.acquire() as conn:
                return str(await conn.fetchval("SELECT current_database()"))
        finally:
            await pool.close()

    assert anyio.run(main) == db


def test_a_flow_runs_on_a_socket_url(
    tmp_path: Path, postgres_server: EmbeddedPostgres, database_url: str
) -> None:
    db = _database(database_url)
    url = f"postgresql://postgres@localhost/{db}?host={_socket_dir(postgres_server)}"
    cocoindex.init(cocoindex.Settings(database=cocoindex.DatabaseConnectionSpec(url=url)))
    write(tmp_path / "docs" / "a.md", "One.\n\nTwo.")
    flow = cocoindex.open_flow("SocketUrl", paragraph_flow(str(tmp_path / "docs")))
    try:
        flow.setup()
        assert flow.update().stats["documents"]["num_insertions"] == 1
        assert flow.row_counts_async  # the flow is usable; the rows are checked below
    finally:
        flow.close()
        cocoindex.stop()

    async def count() -> int:
        conn = await connect(database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM socketurl__paragraphs"))
        finally:
            await conn.close()

    assert anyio.run(count) == 2


def test_connect_arguments_keep_other_parameters_and_reject_a_bad_port() -> None:
    dsn, kwargs = connect_arguments(
        "postgresql://u@h/db?host=/run/postgresql&sslmode=require&application_name=x"
    )
    assert kwargs == {"host": "/run/postgresql"}
    assert dsn == "postgresql://u@h/db?sslmode=require&application_name=x"
    assert connect_arguments("postgresql://u@h/db") == ("postgresql://u@h/db", {})
    assert connect_arguments("postgresql://u@h/db?host=") == ("postgresql://u@h/db?host=", {})
    with pytest.raises(DatabaseError, match="not a port number"):
        connect_arguments("postgresql://u@h/db?port=abc")


def test_a_socket_directory_without_a_server_is_unavailable(tmp_path: Path) -> None:
    url = f"postgresql://postgres@localhost/postgres?host={tmp_path}"
    with pytest.raises(DatabaseUnavailableError):
        anyio.run(_current, url)


def test_spec_user_overrides_the_url_and_passwords_never_show(
    postgres_server: EmbeddedPostgres, database_url: str
) -> None:
    db = _database(database_url)
    # As in v0, DatabaseConnectionSpec(user=...) wins over the user in the URL.
    url = f"postgresql://nobody:wrong@localhost/{db}?host={_socket_dir(postgres_server)}"
    spec = cocoindex.DatabaseConnectionSpec(url=url, user="postgres", password="s3cr@t")
    cocoindex.init(cocoindex.Settings(database=spec))
    try:
        ctx = get_context()
        resolved = ctx.database_url
        assert anyio.run(_current, resolved) == (db, "postgres")
        assert anyio.run(ctx.ensure_database_running)
    finally:
        cocoindex.stop()
    assert "s3cr" not in redact(resolved) and "wrong" not in redact(resolved)
    assert redact("postgresql://u@h/db?password=pw&sslmode=require") == (
        "postgresql://u@h/db?password=***&sslmode=require"
    )
