"""A built flow: its graph and plan, and the one handle to its setup, drop and passes.

Everything here runs on the bridge loop. :class:`FlowExecution` is created once per Flow
object (the definition runs once, in a worker thread) and reused by setup, drop and
update. It is the handle the rest of the runtime, the daemon and ``verify`` hold; the work
lives in modules with one job each, and this class only builds them and hands calls on:

* :mod:`cocod.runtime.flow_setup`: planning and applying setup and drop;
* :mod:`cocod.runtime.update_pass`: the state store and the update passes, and the
  sources' readers, runners and evaluators;
* :mod:`cocod.runtime.writing`: the lease every pass, setup and drop writes under (one
  writer per flow instance across processes, see :mod:`cocod.storage.leases`);
* :mod:`cocod.runtime.limits`: the process-wide thread limiter and per-row output cap
  (``COCOD_MAX_ROWS_PER_SOURCE_ROW``).

The names other modules and tests import from here (``thread_limiter``,
``max_rows_per_source_row``, the target drivers) are re-exported.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TextIO

from cocod.engine.indexer import UpdateMode
from cocod.engine.plan import FlowPlan, compile_plan
from cocod.engine.setup import FlowSetupPlan
from cocod.engine.stats import IndexUpdateInfo, SourceUpdateStats
from cocod.executors import functions as _builtin_functions  # noqa: F401  (registers ops)
from cocod.flow.builder import DataScope, FlowBuilder, record_flow
from cocod.flow.graph import FlowGraph
from cocod.runtime.context import LibraryContext
from cocod.runtime.coordination import FlowCoordination, coordination_for
from cocod.runtime.flow_setup import LEASE_ID_ATTEMPTS, FlowSetup
from cocod.runtime.leasing import OnWait
from cocod.runtime.limits import max_rows_per_source_row, thread_limiter
from cocod.runtime.target_drivers import POSTGRES_DRIVER, TARGET_DRIVER
from cocod.runtime.update_pass import FlowPasses, SourceRuntime, create_source_runtimes
from cocod.runtime.writing import lease_flow_id, open_writing
from cocod.storage.leases import FlowLease
from cocod.storage.state import PostgresStateStore


class FlowExecution:
    def __init__(
        self,
        name: str,
        full_name: str,
        fl_def: Callable[[FlowBuilder, DataScope], None],
    ) -> None:
        self.graph: FlowGraph = record_flow(name, full_name, fl_def)
        self.plan: FlowPlan = compile_plan(self.graph)
        # The desired target states first: a bad table name fails the build before the
        # sources' readers are made.
        self._setup = FlowSetup(full_name, self.plan)
        self.sources: dict[str, SourceRuntime] = create_source_runtimes(self.plan, thread_limiter())
        self._passes = FlowPasses(full_name, self.plan, self.sources, self._setup)

    @property
    def full_name(self) -> str:
        return self.graph.full_name

    @property
    def coordination(self) -> FlowCoordination:
        return coordination_for(self.full_name)

    # -- the lease --------------------------------------------------------------------------
    def writing(
        self,
        ctx: LibraryContext,
        flow_id: int | None = None,
        *,
        wait: float | None = None,
        on_wait: OnWait | None = None,
    ) -> AbstractAsyncContextManager[FlowLease]:
        """The lease to write this flow under for a block (see
        :func:`cocod.runtime.writing.open_writing`)."""
        return open_writing(ctx, self.full_name, flow_id, wait=wait, on_wait=on_wait)

    async def lease_flow_id(self, ctx: LibraryContext) -> int:
        """The id the flow's lease is keyed by (see :func:`cocod.runtime.writing.lease_flow_id`)."""
        return await lease_flow_id(ctx, self.full_name)

    # -- setup / drop (cocod.runtime.flow_setup) ------------------------------------------
    async def plan_setup(self, ctx: LibraryContext) -> FlowSetupPlan:
        """What setup would do; reads the database and changes nothing (not even the plan)."""
        return await self._setup.plan_setup(ctx)

    async def plan_drop(self, ctx: LibraryContext) -> FlowSetupPlan:
        return await self._setup.plan_drop(ctx)

    async def setup(
        self,
        ctx: LibraryContext,
        *,
        out: TextIO | None = None,
        show_plan: bool = True,
        lease_wait: float | None = None,
        on_lease_wait: OnWait | None = None,
        build_deferred: bool = True,
    ) -> FlowSetupPlan:
        """See :meth:`FlowSetup.setup`; ``build_deferred=False`` before a pass (it builds
        the indexes an interrupted initial load deferred at its end)."""
        return await self._setup.setup(
            ctx,
            out=out,
            show_plan=show_plan,
            lease_wait=lease_wait,
            on_lease_wait=on_lease_wait,
            build_deferred=build_deferred,
        )

    async def drop(
        self,
        ctx: LibraryContext,
        *,
        out: TextIO | None = None,
        show_plan: bool = True,
        lease_wait: float | None = None,
        on_lease_wait: OnWait | None = None,
    ) -> FlowSetupPlan:
        return await self._setup.drop(
            ctx, out=out, show_plan=show_plan, lease_wait=lease_wait, on_lease_wait=on_lease_wait
        )

    # -- update (cocod.runtime.update_pass) ------------------------------------------------
    async def open_store(
        self, ctx: LibraryContext, lease: FlowLease | None = None
    ) -> tuple[PostgresStateStore, dict[str, int]]:
        """Check setup is current, and return the state store with its source ids."""
        return await self._passes.open_store(ctx, lease)

    async def update(
        self,
        ctx: LibraryContext,
        mode: UpdateMode = UpdateMode.NORMAL,
        *,
        print_stats: bool = False,
        max_concurrent_rows: int | None = None,
        lease_wait: float | None = None,
        on_lease_wait: OnWait | None = None,
    ) -> IndexUpdateInfo:
        """One pass over every source, under the flow's lease for all of it."""
        return await self._passes.update(
            ctx,
            mode,
            print_stats=print_stats,
            max_concurrent_rows=max_concurrent_rows,
            lease_wait=lease_wait,
            on_lease_wait=on_lease_wait,
        )

    async def update_source(
        self,
        ctx: LibraryContext,
        store: PostgresStateStore,
        name: str,
        source_id: int,
        mode: UpdateMode,
        max_concurrent_rows: int | None = None,
        only_keys: list[str] | None = None,
    ) -> SourceUpdateStats:
        """One pass over one source (all its rows, or ``only_keys``), under the lease."""
        return await self._passes.update_source(
            ctx, store, name, source_id, mode, max_concurrent_rows, only_keys
        )

    def function_calls(self) -> int:
        return sum(r.num_calls for s in self.sources.values() for r in s.runners.values())


__all__ = [
    "LEASE_ID_ATTEMPTS",
    "POSTGRES_DRIVER",
    "TARGET_DRIVER",
    "FlowExecution",
    "max_rows_per_source_row",
    "thread_limiter",
]
