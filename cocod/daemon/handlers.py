"""What each control command does. Arguments were validated against the protocol table."""

from __future__ import annotations

import io
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from cocod.control.protocol import Command, ErrorCode, ProtocolError
from cocod.daemon.config import parse_instance
from cocod.daemon.instances import Instance
from cocod.daemon.server import Emit
from cocod.engine.indexer import UpdateMode
from cocod.errors import SettingsError
from cocod.executors import postgres_target
from cocod.runtime.context import get_context
from cocod.runtime.flow import Flow

if TYPE_CHECKING:
    from cocod.daemon.service import Daemon


class Handlers:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.instances = daemon.instances

    async def dispatch(self, command: Command, args: dict[str, Any], emit: Emit) -> Any:
        if self.daemon.is_draining and command.name not in ("ping", "ls", "status"):
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the daemon is shutting down")
        handler = getattr(self, f"cmd_{command.name}")
        return await handler(emit=emit, **args)

    async def cmd_ping(self, emit: Emit) -> Any:
        from cocod import __version__

        return {"pong": True, "pid": os.getpid(), "version": __version__}

    async def cmd_ls(self, emit: Emit) -> Any:
        return [
            {
                "name": i.name,
                "state": str(i.state),
                "live": i.config.live,
                "origin": i.origin,
                "definition": i.config.definition,
            }
            for i in sorted(self.instances.by_name.values(), key=lambda i: i.name)
        ]

    async def cmd_status(self, emit: Emit, name: str | None = None) -> Any:
        selected = (
            [self.instances.get(name)]
            if name is not None
            else sorted(self.instances.by_name.values(), key=lambda i: i.name)
        )
        return [await self._status_of(i) for i in selected]

    async def _status_of(self, instance: Instance) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": instance.name,
            "state": str(instance.state),
            "live": instance.config.live,
            "origin": instance.origin,
            "failures": instance.failures,
            "last_error": instance.last_error,
            "params": instance.config.params,
        }
        if instance.updater is not None:
            snapshot = instance.updater.snapshot()
            out.update(
                last_update_at=snapshot["last_pass_at"],
                last_change_at=snapshot["last_change_at"],
                pending_changes=snapshot["pending_changes"],
                stats=snapshot["stats"],
            )
            if snapshot["last_error"]:
                out["last_error"] = snapshot["last_error"]
        elif instance.last_update is not None:
            out.update(instance.last_update)
        if instance.flow is not None:
            out["targets"] = await _target_counts(instance.flow)
        return out

    async def cmd_open(self, emit: Emit, name: str) -> Any:
        instance = self.instances.get(name)
        if instance.config.live:
            self.instances.start(instance)
        else:
            await self.instances.ensure_open(instance)
        return {"name": name, "state": str(instance.state)}

    async def cmd_close(self, emit: Emit, name: str) -> Any:
        instance = self.instances.get(name)
        if instance.config.live:
            await self.instances.stop(instance)
        else:
            self.instances.close_on_demand(instance)
        return {"name": name, "state": str(instance.state)}

    async def cmd_setup(self, emit: Emit, name: str) -> Any:
        instance = self.instances.get(name)
        await emit({"event": "progress", "stage": "setup", "name": name})
        return {"name": name, "report": await self._with_flow(instance, _report("setup"))}

    async def cmd_drop(self, emit: Emit, name: str) -> Any:
        instance = self.instances.get(name)
        was_live = instance.config.live and instance.scope is not None
        if was_live:
            await self.instances.stop(instance)  # an updater must not write into dropped tables
        await emit({"event": "progress", "stage": "drop", "name": name})
        report = await self._with_flow(instance, _report("drop"))
        return {"name": name, "report": report, "state": str(instance.state)}

    async def _with_flow(self, instance: Instance, action: Any) -> Any:
        """Run on the instance's flow; a stopped live instance is opened just for this."""
        if instance.flow is not None or not instance.config.live:
            return await self.instances.run_exclusive(instance, action)
        flow = self.instances._open_flow(instance)
        instance.active_commands += 1
        try:
            return await action(flow)
        finally:
            instance.active_commands -= 1
            flow.close()

    async def cmd_update(self, emit: Emit, name: str, full_reprocess: bool = False) -> Any:
        instance = self.instances.get(name)
        await emit({"event": "progress", "stage": "update", "name": name})

        async def action(flow: Flow) -> Any:
            ctx = get_context()
            mode = UpdateMode.FULL_REPROCESS if full_reprocess else UpdateMode.NORMAL
            info = await flow._execution_for(ctx).update(ctx, mode)
            return {"stats": info.stats, "summary": str(info)}

        result = await self._with_flow(instance, action)
        instance.last_update = result
        return {"name": name, **result}

    async def cmd_query(self, emit: Emit, name: str, text: str, top: int = 5) -> Any:
        instance = self.instances.get(name)

        async def action(flow: Flow) -> Any:
            output = await flow.query_async(text, top_k=top)
            return output.results

        return {"name": name, "results": await self._with_flow(instance, action)}

    async def cmd_add(
        self,
        emit: Emit,
        name: str,
        definition: str,
        params: dict[str, Any] | None = None,
        live: bool = True,
    ) -> Any:
        if name in self.instances.by_name:
            raise ProtocolError(ErrorCode.FLOW_EXISTS, f"instance {name!r} already exists")
        try:
            config = parse_instance(
                name, {"definition": definition, "params": params or {}, "live": live}, "add"
            )
        except SettingsError as e:
            raise ProtocolError(ErrorCode.BAD_ARGS, str(e)) from None
        # Fail now, not in the background, if the definition cannot even be loaded.
        from cocod.daemon.definitions import load_definition

        load_definition(config.definition, config.params, self.instances.base_dir, name)
        await self.daemon.registry.add(config)
        instance = self.instances.add(config, "runtime")
        return {"name": name, "state": str(instance.state)}

    async def cmd_remove(self, emit: Emit, name: str, drop: bool = False) -> Any:
        instance = self.instances.get(name)
        if instance.origin != "runtime":
            raise ProtocolError(
                ErrorCode.BAD_ARGS,
                f"instance {name!r} is defined in the config file; remove it there and reload",
            )
        await self.instances.stop(instance)
        report = None
        if drop:
            report = await self.cmd_drop(emit, name)
        await self.daemon.registry.remove(name)
        await self.instances.remove(instance)
        return {"name": name, "removed": True, "dropped": report is not None}

    async def cmd_reload(self, emit: Emit) -> Any:
        return await self.daemon.reload()

    async def cmd_shutdown(self, emit: Emit) -> Any:
        self.daemon.request_shutdown()
        return {"stopping": True}


def _report(operation: str) -> Callable[[Flow], Awaitable[str]]:
    """An action running the flow's setup or drop and returning what it printed."""

    async def action(flow: Flow) -> str:
        out = io.StringIO()
        ctx = get_context()
        execution = flow._execution_for(ctx)
        run = execution.setup if operation == "setup" else execution.drop
        await run(ctx, out=out)
        return out.getvalue()

    return action


async def _target_counts(flow: Flow) -> dict[str, int | None]:
    """Rows per export table (None when the table does not exist yet)."""
    ctx = get_context()
    execution = flow._execution_for(ctx)
    pool = await ctx.pool()
    counts: dict[str, int | None] = {}
    async with pool.acquire() as conn:
        for export in execution.plan.exports.values():
            table = postgres_target.resolve_table(execution.full_name, export)
            exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table.qualified)
            counts[export.name] = (
                int(await conn.fetchval(f"SELECT count(*) FROM {table.qualified}"))
                if exists
                else None
            )
    return counts
