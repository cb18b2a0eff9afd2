"""Instances added at runtime (``cocod add``), persisted in Postgres across restarts."""

from __future__ import annotations

import asyncpg

from cocod.daemon.config import InstanceConfig
from cocod.flow.naming import quote_ident


class RuntimeRegistry:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self._pool = pool
        self._table = f"{quote_ident(schema)}.daemon_instances"
        self._schema = quote_ident(schema)

    async def ensure(self) -> None:
        """Create the table once, even when several daemons start on a fresh database
        (``IF NOT EXISTS`` alone races: both see it missing, one fails)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self._table)
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._schema}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} (name text PRIMARY KEY, "
                "definition text NOT NULL, params jsonb NOT NULL, live boolean NOT NULL, "
                "added_at timestamptz NOT NULL DEFAULT now())"
            )

    async def load(self) -> dict[str, InstanceConfig]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(f"SELECT name, definition, params, live FROM {self._table}")
        return {
            r["name"]: InstanceConfig(r["name"], r["definition"], dict(r["params"]), r["live"])
            for r in rows
        }

    async def add(self, instance: InstanceConfig) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                f"INSERT INTO {self._table} (name, definition, params, live) "
                "VALUES ($1, $2, $3, $4)",
                instance.name,
                instance.definition,
                instance.params,
                instance.live,
            )

    async def remove(self, name: str) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(f"DELETE FROM {self._table} WHERE name = $1", name)
