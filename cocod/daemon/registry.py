"""What the daemon keeps in Postgres across restarts: instances added at runtime
(``cocod add``) and which instances are paused (``cocod pause``).

Both live beside the flows' own state in the internal schema, so daemons that share the
database agree on them, and a paused instance stays paused after a restart. Adding,
removing, pausing or resuming an instance notifies the other daemons
(``NOTIFY cocod_cluster, 'registry'``, delivered when the change commits), which re-read
the registry.
"""

from __future__ import annotations

import asyncpg

from cocod.daemon.config import InstanceConfig
from cocod.flow.naming import quote_ident

NOTIFY_CHANNEL = "cocod_cluster"
"""The cluster's channel (:data:`cocod.daemon.cluster.NOTIFY_CHANNEL`, kept import-free)."""


class RuntimeRegistry:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self._pool = pool
        self._table = f"{quote_ident(schema)}.daemon_instances"
        self._paused = f"{quote_ident(schema)}.daemon_paused"
        self._schema = quote_ident(schema)

    async def ensure(self) -> None:
        """Create the tables once, even when several daemons start on a fresh database
        (``IF NOT EXISTS`` alone races: both see it missing, one fails)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self._table)
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._schema}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} (name text PRIMARY KEY, "
                "definition text NOT NULL, params jsonb NOT NULL, live boolean NOT NULL, "
                "added_at timestamptz NOT NULL DEFAULT now())"
            )
            # Added with on-demand auto-setup; older registries gain it here.
            await conn.execute(
                f"ALTER TABLE {self._table} "
                "ADD COLUMN IF NOT EXISTS auto_setup boolean NOT NULL DEFAULT true"
            )
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._paused} (name text PRIMARY KEY, "
                "paused_at timestamptz NOT NULL DEFAULT now())"
            )

    async def load(self) -> dict[str, InstanceConfig]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT name, definition, params, live, auto_setup FROM {self._table}"
            )
        return {
            r["name"]: InstanceConfig(
                r["name"], r["definition"], dict(r["params"]), r["live"], r["auto_setup"]
            )
            for r in rows
        }

    async def add(self, instance: InstanceConfig) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_notify($1, 'registry')", NOTIFY_CHANNEL)
            await conn.execute(
                f"INSERT INTO {self._table} (name, definition, params, live, auto_setup) "
                "VALUES ($1, $2, $3, $4, $5)",
                instance.name,
                instance.definition,
                instance.params,
                instance.live,
                instance.auto_setup,
            )

    async def remove(self, name: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_notify($1, 'registry')", NOTIFY_CHANNEL)
            await conn.execute(f"DELETE FROM {self._table} WHERE name = $1", name)
            await conn.execute(f"DELETE FROM {self._paused} WHERE name = $1", name)

    async def load_paused(self) -> set[str]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(f"SELECT name FROM {self._paused}")
        return {r["name"] for r in rows}

    async def set_paused(self, name: str, paused: bool) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_notify($1, 'registry')", NOTIFY_CHANNEL)
            if paused:
                await conn.execute(
                    f"INSERT INTO {self._paused} (name) VALUES ($1) ON CONFLICT DO NOTHING", name
                )
            else:
                await conn.execute(f"DELETE FROM {self._paused} WHERE name = $1", name)
