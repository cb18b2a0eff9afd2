"""``verify``: find drift between tracking, target tables and files; optionally repair it.

The engine trusts its tracking table: a row deleted from a target behind its back, an
orphan inserted, a table dropped, a file rewritten with the same mtime and size, are
never noticed by ordinary passes. ``verify_flow`` compares all three (see
:mod:`.scan`) and reports each kind of drift with counts and sample keys;
``repair=True`` fixes it by reprocessing only the affected rows (see :mod:`.repair`), so
the tables afterwards equal a from-scratch build of the same files.
"""

from __future__ import annotations

import asyncpg

from cocod.engine.setup import FlowSetupPlan, apply_export_versions
from cocod.errors import DatabaseError, SetupOutOfDateError
from cocod.runtime.bridge import bridge
from cocod.runtime.context import LibraryContext, get_context
from cocod.runtime.execution import FlowExecution
from cocod.runtime.flow import Flow
from cocod.runtime.verify.repair import repair_flow
from cocod.runtime.verify.report import DRIFT_KINDS, PENDING_KINDS, Finding, VerifyReport
from cocod.runtime.verify.scan import (
    Progress,
    Scan,
    call_progress,
    check_files,
    compare_tables,
    export_checks,
)
from cocod.storage import deferred_indexes

__all__ = [
    "DRIFT_KINDS",
    "PENDING_KINDS",
    "Finding",
    "VerifyReport",
    "verify",
    "verify_execution",
    "verify_flow",
]


async def verify_flow(
    flow: Flow,
    *,
    repair: bool = False,
    progress: Progress | None = None,
    lease_wait: float | None = None,
) -> VerifyReport:
    """Compare ``flow``'s tracking, target tables and files; with ``repair``, fix drift.

    ``progress`` (sync or async) receives ``{"event": "progress", "stage": ...}`` dicts on
    cocod's event loop, so the daemon can pass its reply stream's ``emit`` directly.
    A repair writes under the flow's lease: while another process holds it, the repair
    waits up to ``lease_wait`` seconds (None: as long as it takes), then raises
    :class:`~cocod.errors.FlowBusyError` naming the holder.
    """
    ctx = get_context()
    execution = flow._execution_for(ctx)
    return await bridge.run_async(
        verify_execution(execution, ctx, repair=repair, progress=progress, lease_wait=lease_wait)
    )


def verify(flow: Flow, *, repair: bool = False) -> VerifyReport:
    """Synchronous :func:`verify_flow`."""
    return bridge.run(verify_flow(flow, repair=repair))


async def verify_execution(
    execution: FlowExecution,
    ctx: LibraryContext,
    *,
    repair: bool = False,
    progress: Progress | None = None,
    lease_wait: float | None = None,
) -> VerifyReport:
    scan = await _scan(execution, ctx, progress)
    report = scan.report
    if repair and not report.is_clean:
        # The lease is taken once, before any write, so a refusal (``lease_wait``) comes
        # before the repair starts; the repair's own writes run under this same lease.
        async with execution.writing(ctx, wait=lease_wait):
            setup_plan = await _current_setup(execution, ctx)
            report.repair = await repair_flow(execution, ctx, setup_plan, scan, progress)
        report.after = (await _scan(execution, ctx, progress)).report
    return report


async def _current_setup(execution: FlowExecution, ctx: LibraryContext) -> FlowSetupPlan:
    setup_plan = await execution.plan_setup(ctx)
    if setup_plan.old_record is None or setup_plan.has_changes:
        raise SetupOutOfDateError(
            f"setup for flow {execution.full_name!r} is not up to date; run `cocod setup` "
            "(or Flow.setup()) before verifying it"
        )
    # The logic fingerprints the file check compares with depend on the settled versions.
    apply_export_versions(execution.plan, setup_plan)
    return setup_plan


async def _scan(execution: FlowExecution, ctx: LibraryContext, progress: Progress | None) -> Scan:
    if progress is not None:
        await call_progress(progress, {"stage": "verify.tables", "name": execution.full_name})
    pool = await ctx.pool()
    report = VerifyReport(execution.full_name, {"tracking_rows": 0, "table_rows": 0, "files": 0})
    async with execution.coordination.setup_lock.read():
        setup_plan = await _current_setup(execution, ctx)
        assert setup_plan.old_record is not None
        checks = export_checks(execution, setup_plan, report.notes)
        flow_id = setup_plan.old_record.flow_id
        try:
            # One snapshot for tracking and every table: a pass commits both together.
            async with (
                pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                deferred = await deferred_indexes.read_markers(
                    conn, ctx.schema, execution.full_name
                )
                scan = await compare_tables(
                    conn, ctx.schema, flow_id, setup_plan.sources, checks, report, deferred
                )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
            raise DatabaseError(
                f"verify of flow {execution.full_name!r} could not read its state: {e}"
            ) from e
        await check_files(execution, scan, progress)
    return scan
