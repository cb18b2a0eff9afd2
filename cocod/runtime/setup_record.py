"""The flow's setup record as setup reads it, and the staged states of custom targets.

Every ``setup()`` of an up-to-date flow and every ``update()`` starts by reading the
record, so reading it is one round trip (:func:`read_setup_state`); the deferred-index
markers come with it.

Staging exists because a custom target's ``apply_setup_change`` cannot roll back with the
setup transaction. Before it is called, the state it moves to is staged (committed on its
own, :func:`stage_custom_states`); the setup record's write replaces every row of the
flow, staging included. A staging row that survives means a setup that may have applied
that state and did not record it: the next setup or drop passes it to
``apply_setup_change`` as one more previous state (v0's "previous states" list,
:func:`include_staged`). (This SQL belongs in :mod:`cocod.storage.flow_records`.)
"""

from __future__ import annotations

from typing import Any

import asyncpg

from cocod.engine.setup import FlowRecord, FlowSetupPlan, TargetItem
from cocod.executors import custom_target
from cocod.flow.naming import quote_ident
from cocod.storage import deferred_indexes
from cocod.storage.leases import FlowLease
from cocod.storage.pool import Connection, Pool

STAGING_PREFIX = "staging:"


async def read_setup_state(
    conn: Connection, schema: str, flow_name: str
) -> tuple[FlowRecord | None, bool, dict[str, list[Any]]]:
    """The flow's setup record, whether the internal schema exists, and its staged states.

    One round trip, since this is what every ``setup()`` of an up-to-date flow and every
    ``update()`` pays: a missing table is the answer "no schema yet", not a second query.
    The markers of deferred vector indexes come with it (the record's
    ``deferred_indexes``), so a pass learns of an interrupted load for free.
    """
    try:
        rows = await conn.fetch(
            f"SELECT resource, state FROM {quote_ident(schema)}.setup_metadata "
            "WHERE flow_name = $1",
            flow_name,
        )
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return None, False, {}
    by_resource = {r["resource"]: r["state"] for r in rows}
    staged = {
        resource.removeprefix(STAGING_PREFIX): list(state.get("states", []))
        for resource, state in by_resource.items()
        if resource.startswith(STAGING_PREFIX)
    }
    flow = by_resource.get("flow")
    if flow is None:
        return None, True, staged
    record = FlowRecord(
        flow_id=flow["flow_id"],
        sources=dict(flow.get("sources", {})),
        next_source_id=flow.get("next_source_id", 1),
        targets={
            resource.removeprefix("target:"): state
            for resource, state in by_resource.items()
            if resource.startswith("target:")
        },
        deferred_indexes=deferred_indexes.markers_of(by_resource),
    )
    return record, True, staged


def include_staged(setup_plan: FlowSetupPlan, staged: dict[str, list[Any]]) -> None:
    """Re-plan the custom targets that have staged states (see the module docstring)."""
    for item in setup_plan.targets:
        state = item.new if item.new is not None else item.old
        if state is not None and custom_target.is_custom_state(state) and staged.get(item.key):
            item.change = custom_target.plan_target_change(item.old, item.new, staged[item.key])


async def stage_custom_states(
    schema: str,
    flow_name: str,
    items: list[TargetItem],
    pool: Pool,
    lease: FlowLease | None = None,
) -> None:
    """Commit, fenced by ``lease``, the states the custom targets' changes move to."""
    rows = [
        (flow_name, f"{STAGING_PREFIX}{item.key}", {"states": [item.change.current]})
        for item in items
        if isinstance(item.change, custom_target.CustomTargetChange)
        and item.change.needs_apply
        and item.change.current is not None
    ]
    if not rows:
        return
    s = quote_ident(schema)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = on")
        if lease is not None:
            await lease.check(conn)
        await conn.executemany(
            f"INSERT INTO {s}.setup_metadata AS m (flow_name, resource, state) "
            "VALUES ($1, $2, $3) ON CONFLICT (flow_name, resource) DO UPDATE SET state = "
            "jsonb_build_object('states', (m.state -> 'states') || (EXCLUDED.state -> 'states'))",
            rows,
        )


__all__ = ["STAGING_PREFIX", "include_staged", "read_setup_state", "stage_custom_states"]
