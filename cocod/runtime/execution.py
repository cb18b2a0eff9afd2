"""A built flow: its plan, evaluators and readers, and the operations on its persistent state.

Everything here runs on the bridge loop. :class:`FlowExecution` is created once per Flow
object (the definition runs once) and reused by setup, drop and update.

Every pass, setup and drop writes under the flow's lease (one writer per flow instance
across processes, see :mod:`cocod.storage.leases`): :meth:`FlowExecution.writing`
gives the lease this process writes under, taking one when it has none.

``COCOD_MAX_ROWS_PER_SOURCE_ROW`` (default 100,000) bounds the rows one source row may
produce for one export; more is that row's error, found while the rows are collected.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TextIO

import anyio
import asyncpg
import structlog

from cocod.engine.evaluator import (
    DEFAULT_MAX_ROWS_PER_SOURCE_ROW,
    MAX_ROWS_KNOB,
    Evaluator,
    FunctionRunner,
    create_runners,
)
from cocod.engine.indexer import SourcePassContext, UpdateMode, run_source_pass
from cocod.engine.plan import ExportPlan, FlowPlan, compile_plan
from cocod.engine.setup import (
    FlowRecord,
    FlowSetupPlan,
    TargetItem,
    apply_export_versions,
    plan_drop,
    plan_setup,
)
from cocod.engine.stats import IndexUpdateInfo, SourceUpdateStats
from cocod.errors import (
    CocodError,
    DatabaseError,
    DatabaseUnavailableError,
    FlowBusyError,
    SettingsError,
    SetupError,
    SetupOutOfDateError,
    SourceError,
)
from cocod.executors import custom_target, postgres
from cocod.executors import functions as _builtin_functions  # noqa: F401  (registers ops)
from cocod.executors.custom_source import CustomSourceReader, is_custom_source
from cocod.executors.local_file import LocalFileReader
from cocod.flow.builder import DataScope, FlowBuilder, record_flow
from cocod.flow.graph import FlowGraph
from cocod.ops.sources import LocalFile
from cocod.runtime.context import LibraryContext
from cocod.runtime.coordination import FlowCoordination, coordination_for
from cocod.runtime.leasing import OnWait, take_lease
from cocod.runtime.setup_apply import (
    POSTGRES_DRIVER,
    TARGET_DRIVER,
    apply_drop_plan,
    apply_setup_plan,
    build_deferred_indexes,
    create_writers,
    include_staged,
    read_setup_state,
)
from cocod.storage import deferred_indexes, flow_records, internal_schema, leases
from cocod.storage.leases import FlowLease
from cocod.storage.pool import Connection
from cocod.storage.state import PostgresStateStore, is_unavailable_error

log = structlog.get_logger(__name__)

LEASE_ID_ATTEMPTS = 3
"""Setup/drop re-take the lease when the flow's id changed while they waited for it."""

_THREAD_LIMITER: anyio.CapacityLimiter | None = None


def thread_limiter() -> anyio.CapacityLimiter:
    """One limiter for blocking work of every flow in the process (file reads, functions)."""
    global _THREAD_LIMITER
    if _THREAD_LIMITER is None:
        _THREAD_LIMITER = anyio.CapacityLimiter(8)
    return _THREAD_LIMITER


def max_rows_per_source_row(settings: object) -> int:
    """The per-row output cap: a setting if the settings carry one, else the environment."""
    value = getattr(settings, "max_rows_per_source_row", None)
    if value is None:
        raw = os.environ.get(MAX_ROWS_KNOB, "").strip()
        if not raw:
            return DEFAULT_MAX_ROWS_PER_SOURCE_ROW
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise SettingsError(f"{MAX_ROWS_KNOB}={raw!r} is not a whole number") from None
    if int(value) < 1:
        raise SettingsError(f"{MAX_ROWS_KNOB} must be at least 1 (it is {value})")
    return int(value)


@dataclass
class _SourceRuntime:
    reader: LocalFileReader | CustomSourceReader
    runners: dict[int, FunctionRunner]
    evaluator: Evaluator


class FlowExecution:
    def __init__(
        self,
        name: str,
        full_name: str,
        fl_def: Callable[[FlowBuilder, DataScope], None],
    ) -> None:
        self.graph: FlowGraph = record_flow(name, full_name, fl_def)
        self.plan: FlowPlan = compile_plan(self.graph)
        # Computed once, here (a worker thread): a bad table name fails the build, not
        # setup, and a custom connector's get_persistent_key / get_setup_state (user code)
        # never run on the event loop nor on each setup check.
        self._desired = {
            name_: TARGET_DRIVER.desired_state(full_name, export)
            for name_, export in self.plan.exports.items()
        }
        self._driver = dataclasses.replace(TARGET_DRIVER, desired_state=self._desired_state)
        limiter = thread_limiter()
        self.sources: dict[str, _SourceRuntime] = {}
        for name_, sp in self.plan.sources.items():
            spec = sp.source.spec
            reader: LocalFileReader | CustomSourceReader
            if isinstance(spec, LocalFile):
                reader = LocalFileReader(spec, limiter)
            elif is_custom_source(spec):
                reader = CustomSourceReader(spec, limiter)
            else:
                raise SetupError(
                    f"source {name_!r}: {type(spec).__name__} has no reader; use LocalFile or "
                    "register a @cocod.op.source_connector for it"
                )
            runners = create_runners(sp.for_each, limiter)
            self.sources[name_] = _SourceRuntime(reader, runners, Evaluator(sp.for_each, runners))
        self._store: PostgresStateStore | None = None
        self._store_identity = ""
        self._deferrable: list[postgres.IndexDeferral] = []
        """The targets whose vector indexes an initial load may defer (set with the store)."""

    def _desired_state(self, full_name: str, export: ExportPlan) -> dict[str, Any]:
        return copy.deepcopy(self._desired[export.name])  # the planner adds to it

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
        """The lease to write this flow under for a block: the owner's (``held_lease``),
        the one this process already writes under, or one taken now (by ``flow_id``, else
        by name), waiting up to ``wait`` s (None: as long as it takes) and telling
        ``on_wait`` whom it waits for; FlowBusyError names the holder when ``wait`` ends."""
        target: str | int = self.full_name if flow_id is None else flow_id

        async def take() -> FlowLease:
            return await take_lease(ctx, target, self.full_name, wait=wait, on_wait=on_wait)

        return self.coordination.lease(take)

    async def lease_flow_id(self, ctx: LibraryContext) -> int:
        """The id the flow's lease is keyed by: its setup record's, or one reserved for its
        first setup (so processes setting up one new flow together take one lease)."""
        pool = await ctx.pool()
        async with pool.acquire() as conn:
            await internal_schema.ensure_internal_schema(conn, ctx.schema)
            return await leases.reserve_flow_id(conn, ctx.schema, self.full_name)

    # -- setup / drop ---------------------------------------------------------------------
    async def _read_record(
        self, ctx: LibraryContext
    ) -> tuple[FlowRecord | None, bool, dict[str, list[Any]]]:
        """The setup record, whether the internal schema is missing, and staged states."""
        pool = await ctx.pool()
        async with pool.acquire() as conn:
            record, has_schema, staged = await read_setup_state(conn, ctx.schema, self.full_name)
        return record, not has_schema, staged

    async def plan_setup(self, ctx: LibraryContext) -> FlowSetupPlan:
        """What setup would do; reads the database and changes nothing (not even the plan)."""
        record, needs_schema, staged = await self._read_record(ctx)
        setup_plan = plan_setup(self.plan, record, self._driver, needs_internal_schema=needs_schema)
        include_staged(setup_plan, staged)
        new_items = [t for t in setup_plan.targets if t.new is not None and t.old is None]
        if new_items:
            pool = await ctx.pool()
            async with pool.acquire() as conn:
                if not needs_schema:
                    keys = [t.key for t in new_items]
                    owners = await flow_records.target_owners(
                        conn, ctx.schema, keys, self.full_name
                    )
                    if owners:
                        key, owner = next(iter(owners.items()))
                        item = next(t for t in new_items if t.key == key)
                        custom = item.new is not None and custom_target.is_custom_state(item.new)
                        raise SetupError(
                            f"flow {self.full_name!r} wants "
                            f"{item.description if custom else key.split(':', 1)[-1]}, which "
                            f"flow {owner!r} already manages; choose another "
                            f"{'target' if custom else 'table_name'} (or drop {owner!r})"
                        )
                await self._check_adoption(conn, new_items)
        return setup_plan

    async def _check_adoption(self, conn: Connection, items: list[TargetItem]) -> None:
        """Refuse a table that exists but that cocod did not create, unless adopted."""
        items = [t for t in items if t.new is not None and not custom_target.is_custom_state(t.new)]
        states = [t.new for t in items if t.new is not None and not t.new.get("setup_by_user")]
        existing = await postgres.existing_tables(conn, states)
        for item in items:
            state = item.new
            if state is None or postgres.table_of(state).setup_key not in existing:
                continue
            table = postgres.table_of(state).display
            spec = self.plan.exports[item.export_name].export.target if item.export_name else None
            if not getattr(spec, "adopt_existing", False):
                raise SetupError(
                    f"flow {self.full_name!r}: table {table} already exists and cocod did not "
                    f"create it; choose another table_name, drop the table, or pass "
                    f"targets.Postgres(adopt_existing=True) to let cocod write into it "
                    f"(drop then deletes only cocod's rows and keeps the table)"
                )
            state["created_by_cocod"] = False
            item.change.actions.insert(0, f"Adopt existing table {table} (adopt_existing=True)")

    async def plan_drop(self, ctx: LibraryContext) -> FlowSetupPlan:
        record, _, staged = await self._read_record(ctx)
        drop_plan = plan_drop(self.full_name, record, self._driver)
        include_staged(drop_plan, staged)
        return drop_plan

    async def setup(
        self,
        ctx: LibraryContext,
        *,
        out: TextIO | None = None,
        show_plan: bool = True,
        lease_wait: float | None = None,
        on_lease_wait: OnWait | None = None,
    ) -> FlowSetupPlan:
        async with self.coordination.setup_lock.write():
            setup_plan = await self.plan_setup(ctx)
            if out is not None and show_plan:
                out.write("Setup status:\n\n" + setup_plan.render(ctx.schema) + "\n\n")
            # An up-to-date flow costs no lease: only a setup that changes something takes it.
            for _ in range(LEASE_ID_ATTEMPTS if setup_plan.needs_apply else 0):
                if not setup_plan.has_changes:
                    await self._build_deferred(ctx, out)
                    break
                flow_id = await self.lease_flow_id(ctx)
                async with self.writing(
                    ctx, flow_id, wait=lease_wait, on_wait=on_lease_wait
                ) as lease:
                    setup_plan = await self.plan_setup(ctx)  # another process may have done it
                    record = setup_plan.old_record
                    if record is not None and record.flow_id != lease.flow_id:
                        continue  # set up meanwhile under another id: take that id's lease
                    if setup_plan.has_changes:
                        await self._apply_setup(ctx, setup_plan, out, lease)
                        return setup_plan
                    if setup_plan.deferred_index_builds:
                        await build_deferred_indexes(ctx, setup_plan, lease)
                break
            else:
                if setup_plan.has_changes:
                    raise SetupError(
                        f"setup of flow {self.full_name!r}: its id kept changing while it "
                        "waited for the flow's lease (other processes set it up and dropped "
                        "it); run setup again"
                    )
            if out is not None:
                out.write("No setup changes to apply.\n")
            return setup_plan

    async def _apply_setup(
        self, ctx: LibraryContext, setup_plan: FlowSetupPlan, out: TextIO | None, lease: FlowLease
    ) -> None:
        try:
            await apply_setup_plan(
                ctx, setup_plan, self.plan, out=out, limiter=thread_limiter(), lease=lease
            )
        except BaseException:
            if setup_plan.old_record is None:  # nothing recorded: neither is its reserved id
                await self._forget_reserved_id(ctx)
            raise
        self.coordination.generation += 1

    async def _build_deferred(self, ctx: LibraryContext, out: TextIO | None) -> None:
        """Setup's only work is building indexes an interrupted initial load deferred.

        The lease is not waited for: whoever holds it writes the flow and builds them at
        the end of its pass (a daemon's live updater holds it for as long as it runs, so
        waiting would never end); the marker stays until someone does.
        """
        try:
            async with self.writing(ctx, wait=0.0) as lease:
                setup_plan = await self.plan_setup(ctx)  # under the lease: current
                if setup_plan.has_changes or setup_plan.old_record is None:
                    return  # changed meanwhile: the next setup applies it (and builds)
                if setup_plan.old_record.flow_id == lease.flow_id:
                    built = await build_deferred_indexes(ctx, setup_plan, lease)
                    if out is not None and built:
                        out.write(f"Built the deferred vector indexes of flow {self.full_name}\n")
        except FlowBusyError as e:
            log.info("flow.setup.index_build_left", flow=self.full_name, reason=str(e))
            if out is not None:
                out.write(
                    f"Deferred vector indexes of flow {self.full_name} are left to the "
                    "process writing it, which builds them when its pass ends\n"
                )

    async def _forget_reserved_id(self, ctx: LibraryContext) -> None:
        """Best effort, bounded: a reservation left behind only costs one row."""
        with anyio.move_on_after(5.0, shield=True):
            try:
                pool = await ctx.pool()
                async with pool.acquire() as conn:
                    await leases.forget_reserved_flow_id(conn, ctx.schema, self.full_name)
            except CocodError as e:
                log.warning("flow.setup.reservation_kept", flow=self.full_name, error=str(e))

    async def drop(
        self,
        ctx: LibraryContext,
        *,
        out: TextIO | None = None,
        show_plan: bool = True,
        lease_wait: float | None = None,
        on_lease_wait: OnWait | None = None,
    ) -> FlowSetupPlan:
        async with self.coordination.setup_lock.write():
            drop_plan = await self.plan_drop(ctx)
            if out is not None and show_plan:
                out.write("Drop status:\n\n" + drop_plan.render(ctx.schema) + "\n\n")
            for _ in range(LEASE_ID_ATTEMPTS):
                record = drop_plan.old_record
                if record is None or not drop_plan.has_changes:
                    break
                async with self.writing(
                    ctx, record.flow_id, wait=lease_wait, on_wait=on_lease_wait
                ) as lease:
                    drop_plan = await self.plan_drop(ctx)  # another process may have done it
                    now = drop_plan.old_record
                    if now is not None and now.flow_id != lease.flow_id:
                        continue  # dropped and set up again meanwhile: take the new id's lease
                    if drop_plan.has_changes:
                        await apply_drop_plan(
                            ctx, drop_plan, out=out, limiter=thread_limiter(), lease=lease
                        )
                        self.coordination.generation += 1
                        return drop_plan
            if out is not None:
                out.write("No flows need to be dropped.\n")
            return drop_plan

    # -- update ---------------------------------------------------------------------------
    async def open_store(
        self, ctx: LibraryContext, lease: FlowLease | None = None
    ) -> tuple[PostgresStateStore, dict[str, int]]:
        """Check setup is current, and return the state store with its source ids.

        ``lease``: the one the caller will write under (else the owner's, if any), which
        learns the record's deferred-index markers (see :mod:`cocod.storage.deferred_indexes`).
        """
        setup_plan = await self.plan_setup(ctx)
        if setup_plan.has_changes or setup_plan.old_record is None:
            raise SetupOutOfDateError(
                f"setup for flow {self.full_name!r} is not up to date; run "
                f"`cocod setup` (or Flow.setup()) first"
            )
        apply_export_versions(self.plan, setup_plan)
        pool = await ctx.pool()
        identity = json.dumps(
            [id(pool), setup_plan.old_record.flow_state(), setup_plan.old_record.targets],
            sort_keys=True,
            default=str,
        )
        held = lease or self.coordination.held_lease
        if held is not None:  # the markers came with the record: a pass needs no query
            deferred_indexes.note_markers(held, setup_plan.old_record.deferred_indexes)
        if self._store is None or self._store_identity != identity:
            # The store keeps per-process state (lookup batching): reuse it for as long as
            # the setup it was built for stays the same. A database set up by an older
            # cocod is migrated here, once, under the schema lock.
            async with pool.acquire() as conn:
                await internal_schema.ensure_internal_schema(conn, ctx.schema)
            writers = create_writers(setup_plan, self.plan, thread_limiter())
            self._store = PostgresStateStore(
                pool, ctx.schema, setup_plan.old_record.flow_id, writers
            )
            self._store_identity = identity
            self._deferrable = [
                d
                for t in setup_plan.targets
                if t.new is not None and (d := postgres.deferral_for(t.key, t.new)) is not None
            ]
        return self._store, setup_plan.sources

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
        """One pass over every source, under the flow's lease for all of it (taken first,
        so the setup it checks is the one it writes under)."""
        async with self.writing(ctx, wait=lease_wait, on_wait=on_lease_wait) as lease:
            return await self._update(ctx, mode, print_stats, max_concurrent_rows, lease)

    async def _update(
        self,
        ctx: LibraryContext,
        mode: UpdateMode,
        print_stats: bool,
        max_concurrent_rows: int | None,
        lease: FlowLease,
    ) -> IndexUpdateInfo:
        store, source_ids = await self.open_store(ctx, lease)
        info = IndexUpdateInfo({name: SourceUpdateStats() for name in self.sources})
        errors: list[BaseException] = []

        async def run_one(name: str) -> None:
            try:
                info.sources[name] = await self.update_source(
                    ctx, store, name, source_ids[name], mode, max_concurrent_rows
                )
            except CocodError as e:
                errors.append(e)

        async with anyio.create_task_group() as tg:
            for name in self.sources:
                tg.start_soon(run_one, name)
        if print_stats:
            for name, stats in info.sources.items():
                print(
                    f"✅ {self.full_name}.{name} (batch update): {stats.describe()}",
                    file=sys.stdout,
                )
        if errors:
            first = errors[0]
            if isinstance(first, SourceError):
                raise SourceError(
                    f"error in processing flow {self.full_name!r}: {first}"
                ) from first
            raise first
        return info

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
        runtime = self.sources[name]
        coordination = self.coordination
        async with (
            coordination.setup_lock.read(),
            coordination.source_lock(name),
            self.writing(ctx) as lease,
        ):
            if lease.flow_id != store.flow_id:
                coordination.generation += 1  # live updaters reopen their store
                raise SetupOutOfDateError(
                    f"flow {self.full_name!r} was dropped and set up again by another process "
                    "while this one had it open; the next pass reopens it"
                )
            pass_ctx = SourcePassContext(
                flow_name=self.full_name,
                plan=self.plan,
                source=self.plan.sources[name],
                source_id=source_id,
                reader=runtime.reader,
                store=store.with_fence(lease.check),
                evaluator=runtime.evaluator,
                runners=runtime.runners,
                max_concurrent_rows=max_concurrent_rows or 16,
                memo_retention_seconds=ctx.settings.memo_retention_seconds,
                max_rows_per_source_row=max_rows_per_source_row(ctx.settings),
                thread_limiter=thread_limiter(),
                bulk_load=deferred_indexes.InitialLoadGuard(
                    await ctx.pool(),
                    ctx.schema,
                    self.full_name,
                    list(self._deferrable),
                    lease,
                    lease.check,
                ),
            )
            try:
                stats = await run_source_pass(pass_ctx, mode, only_keys)
            except SourceError as e:
                raise SourceError(f"source {name!r}: {e}") from e
            except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError) as e:
                # Normally mapped by the pool already; a driver error escaping it still
                # says whether waiting for the database will help.
                error_type = DatabaseUnavailableError if is_unavailable_error(e) else DatabaseError
                raise error_type(
                    f"flow {self.full_name!r} source {name!r}: database error: {e}"
                ) from e
            except OSError as e:
                raise SourceError(
                    f"flow {self.full_name!r} source {name!r}: {e.strerror or e}"
                    + (f": {e.filename}" if e.filename else "")
                ) from e
        log.info(
            "flow.update.done",
            flow=self.full_name,
            source=name,
            **{k: v for k, v in stats.as_dict().items() if k != "processing" and v},
        )
        return stats

    def function_calls(self) -> int:
        return sum(r.num_calls for s in self.sources.values() for r in s.runners.values())


__all__ = [
    "POSTGRES_DRIVER",
    "TARGET_DRIVER",
    "FlowExecution",
    "max_rows_per_source_row",
    "thread_limiter",
]
