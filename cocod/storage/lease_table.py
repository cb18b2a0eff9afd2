"""The ``leases`` table: its statement, and creating it once on a database that predates it.

Its own module so the internal schema (:mod:`cocod.storage.internal_schema`) can create
the table without importing the lease machinery.
"""

from __future__ import annotations

from cocod.flow.naming import quote_ident
from cocod.storage.pool import Connection


def lease_table(schema: str) -> str:
    return f"{quote_ident(schema)}.leases"


def leases_table_statement(schema: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {lease_table(schema)} (
        flow_id integer PRIMARY KEY,
        epoch bigint NOT NULL,
        holder_host text NOT NULL,
        holder_pid integer NOT NULL,
        holder_daemon text,
        holder_kind text NOT NULL,
        acquired_at timestamptz NOT NULL,
        heartbeat_at timestamptz NOT NULL)"""


_LEASES_LOCK_KEY = 0x636F636F642D32
"""pg_advisory_xact_lock key serialising the leases table's creation."""


async def ensure_leases_table(conn: Connection, schema: str) -> None:
    """Create the schema and table once, however many processes race to (as the internal
    schema does: check, then re-check under a transaction advisory lock)."""
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", lease_table(schema)):
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LEASES_LOCK_KEY)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        await conn.execute(leases_table_statement(schema))


__all__ = ["ensure_leases_table", "lease_table", "leases_table_statement"]
