"""Applying setup and drop plans: Postgres DDL in one transaction, custom targets around it.

The setup record, the Postgres tables and the internal state change in one transaction
(Postgres DDL is transactional). A custom target's ``apply_setup_change`` cannot join it,
so it runs inside that transaction, after every SQL statement succeeded and before the
record is written and committed: a failure rolls back everything cocod recorded, and a
crash after it leaves the old record, so the next setup calls it again (v0 asks
``apply_setup_change`` to be idempotent). It is never skipped and recorded as done.

Every transaction here runs the flow lease's fence first (``lease.check``, see
:mod:`cocod.storage.leases`): a setup or drop whose process lost the lease rolls back.
A custom target's ``apply_setup_change`` runs after that check, inside the transaction,
so it too is skipped by a process that lost the lease before it started.

Which functions serve each target kind is :mod:`cocod.runtime.target_drivers`; reading
the setup record and staging custom targets' states is :mod:`cocod.runtime.setup_record`;
deciding when to apply (planning, the lease) is :mod:`cocod.runtime.flow_setup`. This
module only applies a plan it is given.
"""

from __future__ import annotations

from typing import TextIO

import anyio
import asyncpg
import structlog

from cocod.engine.interfaces import ExportWrite, TrackedRow
from cocod.engine.plan import FlowPlan
from cocod.engine.row_commit import recorded_keys
from cocod.engine.setup import (
    READY,
    USER_MANAGED,
    FlowRecord,
    FlowSetupPlan,
    TargetItem,
    apply_export_versions,
    target_signature,
)
from cocod.engine.values import key_from_json_text
from cocod.errors import DatabaseError, DatabaseUnavailableError, SetupError
from cocod.executors import custom_target, postgres
from cocod.runtime.context import LibraryContext
from cocod.runtime.setup_record import stage_custom_states
from cocod.runtime.target_drivers import create_writers
from cocod.storage import deferred_indexes, flow_records, internal_schema
from cocod.storage.leases import FlowLease
from cocod.storage.pool import Connection

log = structlog.get_logger(__name__)


async def _fence(conn: Connection, lease: FlowLease | None) -> None:
    if lease is not None:
        await lease.check(conn)


async def _apply_custom(items: list[TargetItem], limiter: anyio.CapacityLimiter | None) -> None:
    for item in items:
        change = item.change
        if isinstance(change, custom_target.CustomTargetChange) and change.needs_apply:
            await custom_target.apply_setup_change(change, limiter)


async def apply_setup_plan(
    ctx: LibraryContext,
    setup_plan: FlowSetupPlan,
    flow_plan: FlowPlan | None,
    *,
    out: TextIO | None,
    limiter: anyio.CapacityLimiter | None = None,
    lease: FlowLease | None = None,
    build_deferred: bool = True,
) -> None:
    """Apply a setup plan in one transaction (Postgres DDL is transactional), fenced by
    ``lease``; a new flow gets the lease's id (the one reserved for it).

    ``build_deferred=False`` (an implicit setup before a pass, which builds them at its
    end anyway) leaves the indexes an interrupted initial load deferred to that pass: their
    markers are written again after the record, which replaces every row of the flow."""
    pool = await ctx.pool()
    name = setup_plan.flow_name
    _say(
        out,
        f"{'Creating' if setup_plan.old_record is None else 'Updating resources for'} flow {name}:",
    )
    if flow_plan is not None:
        apply_export_versions(flow_plan, setup_plan)
    try:
        async with pool.acquire() as conn:
            # Its own transaction, under an advisory lock: instances set up together on a
            # fresh database must not race on CREATE TABLE.
            await internal_schema.ensure_internal_schema(conn, ctx.schema)
        await stage_custom_states(ctx.schema, name, setup_plan.targets, pool, lease)
        async with pool.acquire() as conn, conn.transaction():
            # Rows commit asynchronously (a crash redoes them); setup must not: a server
            # crash right after setup() returned would lose the tables it reported created.
            await conn.execute("SET LOCAL synchronous_commit = on")
            await _fence(conn, lease)
            record = setup_plan.old_record
            if record is not None:
                flow_id = record.flow_id
            elif lease is not None:
                flow_id = lease.flow_id
            else:
                flow_id = await flow_records.allocate_flow_id(conn, ctx.schema)
            for item in setup_plan.targets:
                if item.change.status in (READY, USER_MANAGED):
                    continue
                _say(out, f"{item.description}:")
                for action in item.change.actions:
                    _say(out, f"  - {action}")
                for stmt in item.change.statements:
                    await conn.execute(stmt)
                if record is not None and item.new is None and item.old is not None:
                    await _delete_adopted_rows(conn, ctx, record.flow_id, item)
            # Indexes an interrupted initial load deferred: after setup's own statements
            # (an index whose definition changed is there already, and IF NOT EXISTS
            # leaves it); the record write below removes their markers.
            kept = {} if build_deferred else setup_plan.deferred_index_builds
            if build_deferred:
                for deferral in postgres.deferred_builds(setup_plan):
                    await deferred_indexes.run_build(
                        conn, deferral, lock_timeout=False, flow_name=name
                    )
            if setup_plan.retired_sources and flow_plan is not None:
                await _clean_retired_sources(
                    conn, ctx, flow_id, setup_plan, flow_plan, out, limiter
                )
            # Last before the record: every statement above has succeeded.
            await _apply_custom(setup_plan.targets, limiter)
            new_record = FlowRecord(
                flow_id=flow_id,
                sources=setup_plan.sources,
                next_source_id=setup_plan.next_source_id,
                targets={t.key: t.new for t in setup_plan.targets if t.new is not None},
            )
            # Replaces every row of the flow: the markers of the indexes built above too,
            # and those of targets the plan removes.
            await flow_records.write_flow_record(conn, ctx.schema, name, new_record)
            for target_key, index_names in kept.items():
                await deferred_indexes.write_marker(conn, ctx.schema, name, target_key, index_names)
    except DatabaseUnavailableError:
        raise
    except (asyncpg.PostgresError, DatabaseError, SetupError) as e:  # the pool maps driver errors
        raise SetupError(f"setup of flow {name!r} failed and was rolled back: {e}") from e
    if lease is not None and record is not None:
        # Every marker the record rewrite removed: built, or of a target that is gone.
        removed = [k for k in record.deferred_indexes if k not in kept]
        deferred_indexes.note_built(lease, removed)
    _say(out, f"Done for flow {name}")


async def build_deferred_indexes(
    ctx: LibraryContext, setup_plan: FlowSetupPlan, lease: FlowLease
) -> list[str]:
    """Only the deferred builds (setup found nothing else to do), fenced by ``lease``:
    the indexes and the removal of their markers in one transaction; the markers built.

    A build that fails (a lock it cannot get, the server short of memory) is logged and
    leaves the markers: nothing is inconsistent (the rows are in; queries scan), and the
    next pass, setup or ``verify --repair`` builds them. Only an unreachable database
    raises, as it would for any setup."""
    deferrals = postgres.deferred_builds(setup_plan)
    keys = list(setup_plan.deferred_index_builds)  # every marker goes, built or moot
    pool = await ctx.pool()
    try:
        async with pool.acquire() as conn:
            await deferred_indexes.build_indexes(
                conn, ctx.schema, setup_plan.flow_name, deferrals, lease.check, keys
            )
    except DatabaseUnavailableError:
        raise
    except (asyncpg.PostgresError, DatabaseError) as e:
        log.warning(
            "flow.setup.index_build_failed",
            flow=setup_plan.flow_name,
            tables=[d.display for d in deferrals],
            error=str(e),
            hint="the vector indexes an interrupted initial load deferred are still "
            "missing (queries scan meanwhile); the next update pass builds them, or run "
            "`cocod setup` again once the table is free",
        )
        return []
    deferred_indexes.note_built(lease, keys)
    return keys


async def _clean_retired_sources(
    conn: Connection,
    ctx: LibraryContext,
    flow_id: int,
    setup_plan: FlowSetupPlan,
    flow_plan: FlowPlan,
    out: TextIO | None,
    limiter: anyio.CapacityLimiter | None,
) -> None:
    """Delete what sources removed from the flow produced, and their tracking rows."""
    writers = create_writers(setup_plan, flow_plan, limiter)
    for source_name, source_id in setup_plan.retired_sources.items():
        _say(out, f"  - Clean up legacy source {source_name}")
        removed = await flow_records.delete_source_tracking(conn, ctx.schema, flow_id, source_id)
        for target_keys in removed:
            tracked = TrackedRow(None, None, None, target_keys)
            for export_name, writer in writers.items():
                export = flow_plan.exports[export_name]
                keys = recorded_keys(export, tracked)
                deletes = [key_from_json_text(k, export.key_types) for k in keys]
                if deletes:
                    await writer.write(conn, ExportWrite(deletes=deletes))


async def apply_drop_plan(
    ctx: LibraryContext,
    drop_plan: FlowSetupPlan,
    *,
    out: TextIO | None,
    limiter: anyio.CapacityLimiter | None = None,
    lease: FlowLease | None = None,
    keep_flow_id: bool = False,
) -> None:
    """Drop the flow's targets and state in one transaction; ``keep_flow_id`` leaves its
    id reserved (see :func:`~cocod.storage.flow_records.delete_flow_state`)."""
    pool = await ctx.pool()
    record = drop_plan.old_record
    if record is None:
        return
    name = drop_plan.flow_name
    ignore_failures = ctx.settings.ignore_target_drop_failures
    _say(out, f"Deleting flow {name}:")
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = on")  # as setup: durable
            await _fence(conn, lease)
            for item in drop_plan.targets:
                _say(out, f"{item.description}:")
                for action in item.change.actions:
                    _say(out, f"  - {action}")
                await _delete_adopted_rows(conn, ctx, record.flow_id, item)
                for stmt in item.change.statements:
                    if ignore_failures:
                        try:
                            async with conn.transaction():
                                await conn.execute(stmt)
                        except asyncpg.PostgresError as e:
                            log.warning("drop.target_failed", flow=name, error=str(e))
                    else:
                        await conn.execute(stmt)
            for item in drop_plan.targets:
                try:
                    await _apply_custom([item], limiter)
                except SetupError as e:
                    if not ignore_failures:
                        raise
                    log.warning("drop.target_failed", flow=name, error=str(e))
            await flow_records.delete_flow_state(
                conn, ctx.schema, name, record.flow_id, keep_id=keep_flow_id
            )
    except DatabaseUnavailableError:
        raise
    except (asyncpg.PostgresError, DatabaseError, SetupError) as e:
        raise SetupError(
            f"drop of flow {name!r} failed and was rolled back: {e} "
            "(set COCOD_IGNORE_TARGET_DROP_FAILURES=true to skip failing targets)"
        ) from e
    _say(out, f"Done for flow {name}")


async def _delete_adopted_rows(
    conn: Connection, ctx: LibraryContext, flow_id: int, item: TargetItem
) -> None:
    """An adopted table stays; the rows cocod wrote into it go (found through tracking)."""
    state = item.old
    if state is None or custom_target.is_custom_state(state):
        return
    if not postgres.is_adopted(state):
        return
    signature = target_signature(item.key, state)
    entries = await flow_records.tracked_target_keys(
        conn, ctx.schema, flow_id, str(state.get("export", ""))
    )
    keys = [k for e in entries if e.get("target") == signature for k in e.get("keys", {})]
    await postgres.delete_recorded_rows(conn, state, keys)


def _say(out: TextIO | None, line: str) -> None:
    if out is not None:
        out.write(line + "\n")
