"""Repair what a scan found by reprocessing only what it affects.

Three steps, each safe to interrupt (a crash leaves work the next repair or pass redoes):
1. DDL, excluding passes (the setup lock as writer): missing tables and indexes are
   created with setup's own idempotent statements; a declared column changed behind
   cocod's back is dropped and added again; a table whose key columns changed is
   re-created. Such exports are then re-exported whole.
2. Affected source rows are re-exported (``UpdateMode.REEXPORT`` with ``only_keys``): the
   engine re-reads them, reuses the memo (nothing is re-embedded unless its text changed)
   and writes every row they produce, deleting what they no longer produce. Tracking is
   left alone, so no half-applied marks can outlive a crash.
3. Orphans are deleted last (rows a re-export re-claims never disappear meanwhile), in a
   REPEATABLE READ transaction that re-derives them, under the flow's source locks; a
   concurrent writer from another process makes it fail and retry, never delete a row
   that was just claimed.
"""

from __future__ import annotations

import random
from contextlib import AsyncExitStack

import anyio
import asyncpg

from cocod.engine.indexer import UpdateMode
from cocod.engine.setup import FlowSetupPlan
from cocod.errors import DatabaseError, DatabaseUnavailableError
from cocod.executors import postgres
from cocod.executors.postgres import statements as target_sql
from cocod.runtime.context import LibraryContext
from cocod.runtime.execution import FlowExecution
from cocod.runtime.verify.report import RepairSummary, VerifyReport
from cocod.runtime.verify.scan import Progress, Scan, call_progress, compare_tables, export_checks
from cocod.storage import deferred_indexes

FULL_PASS_THRESHOLD = 2000
"""Above this many affected keys in a source, one full re-export pass is cheaper than hints."""

ORPHAN_DELETE_ATTEMPTS = 6


async def repair_flow(
    execution: FlowExecution,
    ctx: LibraryContext,
    setup_plan: FlowSetupPlan,
    scan: Scan,
    progress: Progress | None,
) -> RepairSummary:
    summary = RepairSummary()
    await _repair_tables(execution, ctx, scan, summary)
    is_full = any(c.needs_full_reexport and not c.is_user_managed for c in scan.exports.values())
    store, source_ids = await execution.open_store(ctx)
    for name in execution.sources:
        keys = scan.affected.get(name, set())
        if not is_full and not keys:
            continue
        only = None if is_full or len(keys) > FULL_PASS_THRESHOLD else sorted(keys)
        if only is None:
            summary.full_passes.append(name)
        if progress is not None:
            await call_progress(progress, {"stage": "verify.reprocess", "source": name})
        stats = await execution.update_source(
            ctx, store, name, source_ids[name], UpdateMode.REEXPORT, only_keys=only
        )
        summary.keys_reprocessed[name] = len(keys)
        summary.stats[name] = stats.as_dict()
    if any(c.orphans for c in scan.exports.values()):
        if progress is not None:
            await call_progress(progress, {"stage": "verify.orphans"})
        summary.orphans_deleted = await _delete_orphans(execution, ctx, setup_plan)
    return summary


async def _repair_tables(
    execution: FlowExecution, ctx: LibraryContext, scan: Scan, summary: RepairSummary
) -> None:
    checks = [
        c
        for c in scan.exports.values()
        if not c.is_user_managed
        and (c.needs_full_reexport or c.missing_indexes or c.deferred_indexes)
    ]
    if not checks:
        return
    pool = await ctx.pool()
    # Under the flow's lease like every other write: another process owning the flow
    # makes this wait (or fail naming it), and a lost lease writes nothing.
    async with execution.writing(ctx) as lease, execution.coordination.setup_lock.write():
        try:
            async with pool.acquire() as conn, conn.transaction():
                await lease.check(conn)
                for check in checks:
                    statements: list[str] = []
                    if check.exists and not check.key_columns_ok:
                        if not check.state.get("created_by_cocod", True):
                            continue  # never drop a table cocod did not create
                        statements.append(target_sql.drop_table_statement(check.table))
                    elif check.exists:
                        for column, sql_type in check.columns_to_restore:
                            statements += target_sql.recreate_column_statements(
                                check.state, column, sql_type
                            )
                            summary.columns_restored.append(f"{check.table.display}.{column}")
                    for statement in statements:
                        await conn.execute(statement)
                    deferral = postgres.deferral_for(check.target_key, check.state)
                    if (
                        check.deferred_indexes
                        and deferral is not None
                        and check.exists
                        and check.key_columns_ok
                    ):
                        # An interrupted load's: with its build's memory, before the rest.
                        # A table just dropped or still missing gets its indexes from
                        # create_statements, on an empty table, like any new one.
                        await deferred_indexes.run_build(
                            conn, deferral, lock_timeout=False, flow_name=execution.full_name
                        )
                    for statement in target_sql.create_statements(check.state):
                        await conn.execute(statement)
                    if not check.exists or not check.key_columns_ok:
                        summary.tables_created.append(check.table.display)
                    summary.indexes_created += check.missing_indexes + check.deferred_indexes
                # Every marker goes with the build: the indexes exist now, whoever made them.
                marked = [c.target_key for c in checks if c.deferred_indexes]
                await deferred_indexes.delete_markers(conn, ctx.schema, execution.full_name, marked)
        except DatabaseUnavailableError:
            raise  # the database is gone: that, not the repair, is what to fix
        except (DatabaseError, asyncpg.PostgresError) as e:  # the pool maps driver errors
            raise DatabaseError(
                f"verify --repair of flow {execution.full_name!r} could not restore its "
                f"tables (rolled back): {e}"
            ) from e
        deferred_indexes.note_built(lease, marked)


async def _delete_orphans(
    execution: FlowExecution, ctx: LibraryContext, setup_plan: FlowSetupPlan
) -> int:
    coordination = execution.coordination
    assert setup_plan.old_record is not None
    flow_id = setup_plan.old_record.flow_id
    pool = await ctx.pool()
    async with (
        execution.writing(ctx, flow_id) as lease,
        coordination.setup_lock.read(),
        AsyncExitStack() as locks,
    ):
        for name in sorted(execution.sources):
            await locks.enter_async_context(coordination.source_lock(name))
        for attempt in range(ORPHAN_DELETE_ATTEMPTS):
            try:
                async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                    await lease.check(conn)
                    checks = export_checks(execution, setup_plan)
                    await compare_tables(
                        conn,
                        ctx.schema,
                        flow_id,
                        setup_plan.sources,
                        checks,
                        VerifyReport(execution.full_name),
                    )
                    deleted = 0
                    for check in checks.values():
                        if check.orphans and check.exists and check.key_columns_ok:
                            sql = target_sql.delete_by_key_sql(check.table, check.plan.key_fields)
                            await conn.executemany(sql, check.orphans)
                            deleted += len(check.orphans)
                    return deleted
            except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError) as e:
                if attempt == ORPHAN_DELETE_ATTEMPTS - 1:
                    raise DatabaseError(
                        f"verify --repair of flow {execution.full_name!r}: orphan rows kept "
                        f"changing under concurrent writes ({e}); run it again"
                    ) from e
                # Another process wrote the same rows: back off (capped, jittered), redo.
                await anyio.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    return 0
