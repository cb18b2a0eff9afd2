"""A flow's internal id: read from its setup record, or reserved before its first setup.

The lease (:mod:`cocod.storage.leases`) and every internal table key a flow by this id,
not by its name. Its own module so the id's life (reserve, record, forget) reads in one
place.
"""

from __future__ import annotations

import asyncpg

from cocod.errors import SetupOutOfDateError
from cocod.flow.naming import quote_ident
from cocod.storage.pool import Connection


async def resolve_flow_id(conn: Connection, schema: str, flow_full_name: str) -> int | None:
    """The flow's internal id: its setup record's, or the id reserved for its first setup."""
    try:
        found = await conn.fetchval(
            f"SELECT (state ->> 'flow_id')::int FROM {quote_ident(schema)}.setup_metadata "
            "WHERE flow_name = $1 AND resource IN ('flow', 'flow_id') "
            "ORDER BY resource = 'flow' DESC LIMIT 1",
            flow_full_name,
        )
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return None
    return None if found is None else int(found)


async def reserve_flow_id(conn: Connection, schema: str, flow_full_name: str) -> int:
    """The flow's internal id: its setup record's, else one reserved for its first setup.

    The lease is keyed by this id, so it must exist before a first setup takes the
    lease: processes setting up one new flow together all read back the same reserved id
    (``ON CONFLICT DO NOTHING``), so they take the same lease. The reservation is a
    ``flow_id`` resource row in ``setup_metadata``; the setup record that replaces the
    flow's rows, or drop, removes it. Needs the internal schema.
    """
    found = await resolve_flow_id(conn, schema, flow_full_name)
    if found is not None:
        return found
    s = quote_ident(schema)
    await conn.execute(
        f"INSERT INTO {s}.setup_metadata (flow_name, resource, state) "
        "SELECT $1, 'flow_id', jsonb_build_object('flow_id', nextval($2::regclass)) "
        "ON CONFLICT (flow_name, resource) DO NOTHING",
        flow_full_name,
        f"{s}.flow_id_seq",
    )
    reserved = await resolve_flow_id(conn, schema, flow_full_name)
    if reserved is None:  # dropped between the two statements: a drop cannot race a setup
        raise SetupOutOfDateError(  # under one lease, so this is another process's drop
            f"flow {flow_full_name!r} was dropped while its first setup started; run setup again"
        )
    return reserved


async def keep_flow_id_reserved(
    conn: Connection, schema: str, flow_name: str, flow_id: int
) -> None:
    """Reserve ``flow_id`` again for the flow whose rows a drop just removed (in the drop's
    transaction), so its next setup is keyed, and waits for, the same lease."""
    await conn.execute(
        f"INSERT INTO {quote_ident(schema)}.setup_metadata (flow_name, resource, state) "
        "VALUES ($1, 'flow_id', jsonb_build_object('flow_id', $2::int))",
        flow_name,
        flow_id,
    )


async def forget_reserved_flow_id(conn: Connection, schema: str, flow_full_name: str) -> None:
    """Remove a reservation a failed first setup leaves (its record was never written)."""
    await conn.execute(
        f"DELETE FROM {quote_ident(schema)}.setup_metadata "
        "WHERE flow_name = $1 AND resource = 'flow_id'",
        flow_full_name,
    )


__all__ = [
    "forget_reserved_flow_id",
    "keep_flow_id_reserved",
    "reserve_flow_id",
    "resolve_flow_id",
]
