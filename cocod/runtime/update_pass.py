"""The update passes of one built flow: the state store they write through, and the passes.

A pass checks that setup is current, opens (or reuses) the state store built for that
setup, and runs each source under the flow's lease, fenced by it. This is the row-writing
side of a flow, kept apart from setup (:mod:`cocod.runtime.flow_setup`), which it only
asks for the current plan. It also holds the sources' readers, runners and evaluators
(:class:`SourceRuntime`), which every pass, ``evaluate``, queries and ``verify`` use.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import anyio
import asyncpg
import structlog

from cocod.engine.evaluator import Evaluator, FunctionRunner, create_runners
from cocod.engine.indexer import SourcePassContext, UpdateMode, run_source_pass
from cocod.engine.plan import FlowPlan
from cocod.engine.setup import apply_export_versions
from cocod.engine.stats import IndexUpdateInfo, SourceUpdateStats
from cocod.errors import (
    CocodError,
    DatabaseError,
    DatabaseUnavailableError,
    SetupError,
    SetupOutOfDateError,
    SourceError,
)
from cocod.executors import postgres
from cocod.executors.custom_source import CustomSourceReader, is_custom_source
from cocod.executors.local_file import LocalFileReader
from cocod.ops.sources import LocalFile
from cocod.runtime.context import LibraryContext
from cocod.runtime.coordination import FlowCoordination, coordination_for
from cocod.runtime.flow_setup import FlowSetup
from cocod.runtime.leasing import OnWait
from cocod.runtime.limits import max_rows_per_source_row, thread_limiter
from cocod.runtime.target_drivers import create_writers
from cocod.runtime.writing import open_writing
from cocod.storage import deferred_indexes, internal_schema
from cocod.storage.leases import FlowLease
from cocod.storage.state import PostgresStateStore, is_unavailable_error

log = structlog.get_logger(__name__)


@dataclass
class SourceRuntime:
    """What reads one source and evaluates its rows (one per source of the flow)."""

    reader: LocalFileReader | CustomSourceReader
    runners: dict[int, FunctionRunner]
    evaluator: Evaluator


def create_source_runtimes(
    plan: FlowPlan, limiter: anyio.CapacityLimiter
) -> dict[str, SourceRuntime]:
    """A reader, function runners and an evaluator per source; a source kind with no
    reader fails the build."""
    sources: dict[str, SourceRuntime] = {}
    for name, sp in plan.sources.items():
        spec = sp.source.spec
        reader: LocalFileReader | CustomSourceReader
        if isinstance(spec, LocalFile):
            reader = LocalFileReader(spec, limiter)
        elif is_custom_source(spec):
            reader = CustomSourceReader(spec, limiter)
        else:
            raise SetupError(
                f"source {name!r}: {type(spec).__name__} has no reader; use LocalFile or "
                "register a @cocod.op.source_connector for it"
            )
        runners = create_runners(sp.for_each, limiter)
        sources[name] = SourceRuntime(reader, runners, Evaluator(sp.for_each, runners))
    return sources


class FlowPasses:
    """The passes of one flow instance and the state store they write through."""

    def __init__(
        self,
        full_name: str,
        plan: FlowPlan,
        sources: dict[str, SourceRuntime],
        setup: FlowSetup,
    ) -> None:
        self.full_name = full_name
        self.plan = plan
        self.sources = sources
        self._setup = setup
        self._store: PostgresStateStore | None = None
        self._store_identity = ""
        self._deferrable: list[postgres.IndexDeferral] = []
        """The targets whose vector indexes an initial load may defer (set with the store)."""

    @property
    def coordination(self) -> FlowCoordination:
        return coordination_for(self.full_name)

    async def open_store(
        self, ctx: LibraryContext, lease: FlowLease | None = None
    ) -> tuple[PostgresStateStore, dict[str, int]]:
        """Check setup is current, and return the state store with its source ids.

        ``lease``: the one the caller will write under (else the owner's, if any), which
        learns the record's deferred-index markers (see :mod:`cocod.storage.deferred_indexes`).
        """
        # Read before the record: markers read before a lease was taken must not be noted
        # under it (another process may have written one in between).
        held = lease or self.coordination.held_lease
        setup_plan = await self._setup.plan_setup(ctx)
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
        if held is not None and (held is lease or held is self.coordination.held_lease):
            # Held since before the read: the markers came with the record, so a pass
            # needs no query of its own.
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
        async with open_writing(
            ctx, self.full_name, wait=lease_wait, on_wait=on_lease_wait
        ) as lease:
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
            open_writing(ctx, self.full_name) as lease,
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


__all__ = ["FlowPasses", "SourceRuntime", "create_source_runtimes"]
