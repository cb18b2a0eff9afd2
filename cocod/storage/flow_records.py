"""Per-flow records in the internal tables: what setup applied, and removing a flow's state.

Setup and drop use these inside their own transaction; the tables themselves are
described in :mod:`cocod.storage.internal_schema`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cocod.engine.setup import FlowRecord
from cocod.flow.naming import quote_ident
from cocod.storage.flow_ids import keep_flow_id_reserved
from cocod.storage.internal_schema import internal_schema_exists
from cocod.storage.pool import Connection
from cocod.storage.state import mark_orphans


async def read_flow_record(conn: Connection, schema: str, flow_name: str) -> FlowRecord | None:
    if not await internal_schema_exists(conn, schema):
        return None
    rows = await conn.fetch(
        f"SELECT resource, state FROM {quote_ident(schema)}.setup_metadata WHERE flow_name = $1",
        flow_name,
    )
    by_resource = {r["resource"]: r["state"] for r in rows}
    flow = by_resource.pop("flow", None)
    if flow is None:
        return None
    record = FlowRecord(
        flow_id=flow["flow_id"],
        sources=dict(flow.get("sources", {})),
        next_source_id=flow.get("next_source_id", 1),
    )
    for resource, state in by_resource.items():
        if resource.startswith("target:"):
            record.targets[resource.removeprefix("target:")] = state
    return record


async def list_flow_names(conn: Connection, schema: str) -> list[str]:
    if not await internal_schema_exists(conn, schema):
        return []
    rows = await conn.fetch(
        f"SELECT flow_name FROM {quote_ident(schema)}.setup_metadata "
        "WHERE resource = 'flow' ORDER BY flow_name"
    )
    return [r["flow_name"] for r in rows]


async def target_owners(
    conn: Connection, schema: str, keys: Sequence[str], except_flow: str
) -> dict[str, str]:
    """Which other flows already manage these targets (setup key → flow name)."""
    rows = await conn.fetch(
        f"SELECT flow_name, resource FROM {quote_ident(schema)}.setup_metadata "
        "WHERE resource = ANY($1::text[]) AND flow_name <> $2",
        [f"target:{k}" for k in keys],
        except_flow,
    )
    return {r["resource"].removeprefix("target:"): r["flow_name"] for r in rows}


async def allocate_flow_id(conn: Connection, schema: str) -> int:
    sequence = f"{quote_ident(schema)}.flow_id_seq"
    return int(await conn.fetchval("SELECT nextval($1::regclass)", sequence))


async def write_flow_record(
    conn: Connection, schema: str, flow_name: str, record: FlowRecord
) -> None:
    s = quote_ident(schema)
    await conn.execute(f"DELETE FROM {s}.setup_metadata WHERE flow_name = $1", flow_name)
    rows = [(flow_name, "flow", record.flow_state())] + [
        (flow_name, f"target:{key}", state) for key, state in record.targets.items()
    ]
    await conn.executemany(
        f"INSERT INTO {s}.setup_metadata (flow_name, resource, state) VALUES ($1, $2, $3)", rows
    )


async def delete_flow_state(
    conn: Connection, schema: str, flow_name: str, flow_id: int, *, keep_id: bool = False
) -> None:
    """Remove the flow's tracking, memo and setup record.

    ``keep_id``: leave the flow's id reserved (a ``flow_id`` row, as before a first
    setup), for a drop made under a lease its holder keeps (a live updater, a daemon
    owner). Another process setting the flow up next then reads that id and waits for
    the holder's lease, instead of reserving a new id, taking that id's free lease and
    writing the flow beside the holder, which still writes under the old one.
    """
    s = quote_ident(schema)
    await conn.execute(f"DELETE FROM {s}.tracking WHERE flow_id = $1", flow_id)
    await conn.execute(f"DELETE FROM {s}.memo WHERE flow_id = $1", flow_id)
    await conn.execute(f"DELETE FROM {s}.setup_metadata WHERE flow_name = $1", flow_name)
    if keep_id:
        await keep_flow_id_reserved(conn, schema, flow_name, flow_id)


async def delete_source_tracking(
    conn: Connection, schema: str, flow_id: int, source_id: int
) -> list[dict[str, dict[str, Any]]]:
    """Remove a retired source's tracking rows; returns their target keys to delete.

    The memo entries only those rows used become collection candidates in the same
    transaction, as a commit's released keys do.
    """
    rows = await conn.fetch(
        f"DELETE FROM {quote_ident(schema)}.tracking WHERE flow_id = $1 AND source_id = $2 "
        "RETURNING target_keys, memo_keys",
        flow_id,
        source_id,
    )
    released = {k for r in rows for k in r["memo_keys"]}
    if released:
        s = quote_ident(schema)
        await mark_orphans(conn, f"{s}.memo", f"{s}.tracking", flow_id, released)
    return [dict(r["target_keys"]) for r in rows]


async def tracked_target_keys(
    conn: Connection, schema: str, flow_id: int, export_name: str
) -> list[dict[str, Any]]:
    """Every row's recorded keys for one export (what drop deletes from adopted tables)."""
    rows = await conn.fetch(
        f"SELECT target_keys -> $2 AS entry FROM {quote_ident(schema)}.tracking "
        "WHERE flow_id = $1 AND target_keys ? $2",
        flow_id,
        export_name,
    )
    return [dict(r["entry"]) for r in rows if r["entry"]]
