"""Setup and drop of one built flow: planning them, and applying them under its lease.

Planning reads the database and changes nothing; applying is :mod:`cocod.runtime.setup_apply`.
What is here is the decision in between, which is subtle enough to keep apart from both
the passes and the DDL: an up-to-date flow costs no lease; a setup or drop that changes
something plans again under the lease (another process may have done it meanwhile) and
re-takes it when the flow's id changed while it waited; a setup whose only work is the
vector indexes an interrupted initial load deferred never waits for the lease, since
whoever holds it builds them at the end of its pass. An implicit setup right before a
pass (the daemon starting an instance, ``cocod update``) skips those builds altogether
(``build_deferred=False``): the pass builds them at its end, after the rest of the load.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, TextIO

import anyio
import structlog

from cocod.engine.plan import ExportPlan, FlowPlan
from cocod.engine.setup import FlowRecord, FlowSetupPlan, TargetItem, plan_drop, plan_setup
from cocod.errors import CocodError, FlowBusyError, SetupError
from cocod.executors import custom_target, postgres
from cocod.runtime.context import LibraryContext
from cocod.runtime.coordination import FlowCoordination, coordination_for
from cocod.runtime.leasing import OnWait
from cocod.runtime.limits import thread_limiter
from cocod.runtime.setup_apply import apply_drop_plan, apply_setup_plan, build_deferred_indexes
from cocod.runtime.setup_record import include_staged, read_setup_state
from cocod.runtime.target_drivers import TARGET_DRIVER
from cocod.runtime.writing import lease_flow_id, open_writing
from cocod.storage import flow_records, leases
from cocod.storage.leases import FlowLease
from cocod.storage.pool import Connection

log = structlog.get_logger(__name__)

LEASE_ID_ATTEMPTS = 3
"""Setup/drop re-take the lease when the flow's id changed while they waited for it."""


class FlowSetup:
    """The setup and drop of one flow instance (its plan, under its full name)."""

    def __init__(self, full_name: str, plan: FlowPlan) -> None:
        self.full_name = full_name
        self.plan = plan
        # Computed once, here (a worker thread): a bad table name fails the build, not
        # setup, and a custom connector's get_persistent_key / get_setup_state (user code)
        # never run on the event loop nor on each setup check.
        self._desired = {
            name: TARGET_DRIVER.desired_state(full_name, export)
            for name, export in plan.exports.items()
        }
        self.driver = dataclasses.replace(TARGET_DRIVER, desired_state=self._desired_state)

    def _desired_state(self, full_name: str, export: ExportPlan) -> dict[str, Any]:
        return copy.deepcopy(self._desired[export.name])  # the planner adds to it

    @property
    def coordination(self) -> FlowCoordination:
        return coordination_for(self.full_name)

    # -- planning -----------------------------------------------------------------------
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
        setup_plan = plan_setup(self.plan, record, self.driver, needs_internal_schema=needs_schema)
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
        drop_plan = plan_drop(self.full_name, record, self.driver)
        include_staged(drop_plan, staged)
        return drop_plan

    # -- setup --------------------------------------------------------------------------
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
        """Apply what the flow's setup needs; ``build_deferred=False`` leaves the indexes
        an interrupted initial load deferred to the pass that follows (it builds them at
        its end), for a setup run only to make that pass possible."""
        async with self.coordination.setup_lock.write():
            setup_plan = await self.plan_setup(ctx)
            if out is not None and show_plan:
                out.write("Setup status:\n\n" + setup_plan.render(ctx.schema) + "\n\n")
            needs_apply = setup_plan.needs_apply if build_deferred else setup_plan.has_changes
            # An up-to-date flow costs no lease: only a setup that changes something takes it.
            for _ in range(LEASE_ID_ATTEMPTS if needs_apply else 0):
                if not setup_plan.has_changes:
                    await self._build_deferred(ctx, out)  # says what it did
                    return setup_plan
                flow_id = await lease_flow_id(ctx, self.full_name)
                async with open_writing(
                    ctx, self.full_name, flow_id, wait=lease_wait, on_wait=on_lease_wait
                ) as lease:
                    setup_plan = await self.plan_setup(ctx)  # another process may have done it
                    record = setup_plan.old_record
                    if record is not None and record.flow_id != lease.flow_id:
                        continue  # set up meanwhile under another id: take that id's lease
                    if setup_plan.has_changes:
                        await self._apply_setup(ctx, setup_plan, out, lease, build_deferred)
                        return setup_plan
                    if setup_plan.deferred_index_builds and build_deferred:
                        self._say_built(out, await build_deferred_indexes(ctx, setup_plan, lease))
                        return setup_plan  # said what it did: not "no setup changes"
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
        self,
        ctx: LibraryContext,
        setup_plan: FlowSetupPlan,
        out: TextIO | None,
        lease: FlowLease,
        build_deferred: bool,
    ) -> None:
        try:
            await apply_setup_plan(
                ctx,
                setup_plan,
                self.plan,
                out=out,
                limiter=thread_limiter(),
                lease=lease,
                build_deferred=build_deferred,
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
            async with open_writing(ctx, self.full_name, wait=0.0) as lease:
                setup_plan = await self.plan_setup(ctx)  # under the lease: current
                if setup_plan.has_changes or setup_plan.old_record is None:
                    return  # changed meanwhile: the next setup applies it (and builds)
                if setup_plan.old_record.flow_id == lease.flow_id:
                    self._say_built(out, await build_deferred_indexes(ctx, setup_plan, lease))
        except FlowBusyError as e:
            log.info("flow.setup.index_build_left", flow=self.full_name, reason=str(e))
            if out is not None:
                out.write(
                    f"Deferred vector indexes of flow {self.full_name} are left to the "
                    "process writing it, which builds them when its pass ends\n"
                )

    def _say_built(self, out: TextIO | None, built: list[str]) -> None:
        if out is None:
            return
        if built:
            out.write(f"Built the deferred vector indexes of flow {self.full_name}\n")
        else:
            out.write(
                f"Could not build the deferred vector indexes of flow {self.full_name} "
                "(see the log); queries scan meanwhile, and the next update pass builds them\n"
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

    # -- drop ---------------------------------------------------------------------------
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
                async with open_writing(
                    ctx, self.full_name, record.flow_id, wait=lease_wait, on_wait=on_lease_wait
                ) as lease:
                    drop_plan = await self.plan_drop(ctx)  # another process may have done it
                    now = drop_plan.old_record
                    if now is not None and now.flow_id != lease.flow_id:
                        continue  # dropped and set up again meanwhile: take the new id's lease
                    if drop_plan.has_changes:
                        await apply_drop_plan(
                            ctx,
                            drop_plan,
                            out=out,
                            limiter=thread_limiter(),
                            lease=lease,
                            # The owner keeps this lease past the drop: its id stays taken.
                            keep_flow_id=lease is self.coordination.held_lease,
                        )
                        self.coordination.generation += 1
                        return drop_plan
            if out is not None:
                out.write("No flows need to be dropped.\n")
            return drop_plan


__all__ = ["LEASE_ID_ATTEMPTS", "FlowSetup"]
