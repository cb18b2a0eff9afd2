"""What each control command does. Arguments were validated against the protocol table.

``search`` pins one instance at a time (so it never holds more on-demand instances open
than the daemon allows), embeds the query once per distinct embedding function, and
merges the hits by score (:mod:`cocod.runtime.search`). ``update`` streams the pass's
progress to its client as rate-limited ``progress`` events.

``ping``, ``ls`` and ``status`` answer from memory: the instance states, the updater
snapshots, the database state kept by the supervisor and row counts refreshed in the
background (shown with their age). They never wait on the database, so they answer within
a second whether it is up, dead or frozen. A command that meets an unreachable database
tells the supervisor, which starts probing (and restarting the embedded server) at once.
"""

from __future__ import annotations

import io
import os
import time
from typing import TYPE_CHECKING, Any

from cocod.control.protocol import Command, ErrorCode, ProtocolError
from cocod.daemon.config import parse_instance
from cocod.daemon.definitions import load_definition_async
from cocod.daemon.instance_state import State
from cocod.daemon.instances import Instance
from cocod.daemon.metrics import metrics_snapshot
from cocod.daemon.progress_events import ProgressForwarder
from cocod.daemon.progress_view import status_fields
from cocod.daemon.server import Emit
from cocod.errors import (
    DatabaseUnavailableError,
    FlowDefinitionError,
    SettingsError,
    SetupError,
)
from cocod.runtime import context
from cocod.runtime.flow import Flow
from cocod.runtime.search import SearchSession

if TYPE_CHECKING:
    from cocod.daemon.service import Daemon

READ_ONLY_COMMANDS = frozenset({"ping", "ls", "status"})


class Handlers:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.instances = daemon.instances

    async def dispatch(self, command: Command, args: dict[str, Any], emit: Emit) -> Any:
        if self.daemon.is_draining and command.name not in READ_ONLY_COMMANDS:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the daemon is shutting down")
        handler = getattr(self, f"cmd_{command.name}")
        try:
            return await handler(emit=emit, **args)
        except DatabaseUnavailableError as e:
            self.daemon.database.report_down(f"{command.name}: {e}")
            raise

    def _database_state(self) -> str:
        return str(self.daemon.database.state)

    async def cmd_ping(self, emit: Emit) -> Any:
        from cocod import __version__

        return {
            "pong": True,
            "pid": os.getpid(),
            "version": __version__,
            "database": self._database_state(),
        }

    async def cmd_ls(self, emit: Emit) -> Any:
        database = self._database_state()
        return [
            {
                "name": i.name,
                "state": str(i.state),
                "live": i.config.live,
                "origin": i.origin,
                "definition": i.config.definition,
                "database": database,
            }
            for i in sorted(self.instances.by_name.values(), key=lambda i: i.name)
        ]

    async def cmd_status(self, emit: Emit, name: str | None = None) -> Any:
        selected = (
            [self.instances.get(name)]
            if name is not None
            else sorted(self.instances.by_name.values(), key=lambda i: i.name)
        )
        # The numbers the metrics endpoint serves (`status --json`): the instance's own,
        # with the daemon process's RSS and CPU beside them.
        snapshot = metrics_snapshot(self.daemon)
        return [
            {
                **self._status_of(i),
                "metrics": {
                    **snapshot["instances"].get(i.name, {}),
                    "process": snapshot["process"],
                },
            }
            for i in selected
        ]

    def _status_of(self, instance: Instance) -> dict[str, Any]:
        """One instance's status, from memory only (no await: nothing can block it)."""
        out: dict[str, Any] = {
            "name": instance.name,
            "state": str(instance.state),
            "live": instance.config.live,
            "origin": instance.origin,
            "failures": instance.failures,
            "last_error": instance.last_error,
            "params": instance.config.params,
            "database": self._database_state(),
            "owner": self._owner_of(instance),
        }
        if instance.updater is not None:
            snapshot = instance.updater.snapshot()
            out.update(
                last_update_at=snapshot["last_pass_at"],
                last_change_at=snapshot["last_change_at"],
                pending_changes=snapshot["pending_changes"],
                caught_up=snapshot["caught_up"],
                stats=snapshot["stats"],
            )
            if "progress" in snapshot:
                # Per source loop: hints pending, passes run, retry countdown. (`progress`
                # is the running pass's counts, from the instance's progress sink.)
                out["sources"] = snapshot["progress"]
            if "database_down" in snapshot:
                out["database_down"] = snapshot["database_down"]
            if snapshot["last_error"]:
                out["last_error"] = snapshot["last_error"]
        elif instance.last_update is not None:
            out.update({k: v for k, v in instance.last_update.items() if k != "progress"})
        out.update(status_fields(instance.progress, instance.paused))
        if instance.row_counts is not None and instance.row_counts_at is not None:
            out["targets"] = dict(instance.row_counts)
            out["targets_age_s"] = round(max(0.0, time.time() - instance.row_counts_at), 1)
        return out

    def _owner_of(self, instance: Instance) -> dict[str, Any] | None:
        """Who owns a live instance (host, pid, daemon id), as of the last heartbeat."""
        cluster = self.instances.cluster
        if cluster is None or not instance.config.live:
            return None
        owner = cluster.owner_of(instance.name)
        if owner is None:
            return None
        return {"host": owner.host, "pid": owner.pid, "daemon_id": owner.daemon_id}

    async def cmd_open(self, emit: Emit, name: str) -> Any:
        instance = self.instances.get(name)
        if instance.config.live:
            self.instances.start(instance)
        else:
            await self.instances.open_on_demand(instance)
        return {"name": name, "state": str(instance.state)}

    async def cmd_close(self, emit: Emit, name: str) -> Any:
        instance = self.instances.get(name)
        if instance.config.live:
            await self.instances.stop(instance)
        else:
            self.instances.close_on_demand(instance)
        return {"name": name, "state": str(instance.state)}

    async def cmd_setup(self, emit: Emit, name: str) -> Any:
        await emit({"event": "progress", "stage": "setup", "name": name})
        async with self.instances.pinned(name) as flow:
            report = await _report(flow, "setup")
        return {"name": name, "report": report}

    async def cmd_drop(self, emit: Emit, name: str) -> Any:
        instance = self.instances.get(name)
        if instance.config.live and instance.scope is not None:
            await self.instances.stop(instance)  # an updater must not write into dropped tables
        await emit({"event": "progress", "stage": "drop", "name": name})
        async with self.instances.pinned(name) as flow:
            report = await _report(flow, "drop")
        instance.row_counts = instance.row_counts_at = None
        return {"name": name, "report": report, "state": str(instance.state)}

    async def cmd_update(self, emit: Emit, name: str, full_reprocess: bool = False) -> Any:
        instance = self.instances.get(name)
        forwarding = self.daemon.membership.forwarding
        if instance.state is State.STANDBY and forwarding is not None:
            # Another daemon owns it: that one runs the update, under its own lease
            # (docs/scale-out.md, "Commands and the owner").
            return await forwarding.forward(
                name, "update", {"full_reprocess": full_reprocess}, emit
            )
        return await self.update_here(emit, name, full_reprocess)

    async def update_here(self, emit: Emit, name: str, full_reprocess: bool = False) -> Any:
        """``update`` run by this daemon: sent here, or forwarded here by a standby."""
        instance = self.instances.get(name)
        await emit({"event": "progress", "stage": "update", "name": name})
        async with self.instances.pinned(name) as flow:
            async with ProgressForwarder(emit, name, also=instance.progress).reporting():
                info = await flow.update_async(full_reprocess=full_reprocess)
            instance.counted_change_at = None  # recount in the background
        result = {"stats": info.stats, "summary": str(info)}
        instance.last_update = result
        return {"name": name, **result}

    async def cmd_verify(
        self, emit: Emit, name: str, repair: bool = False, wait: bool = True
    ) -> Any:
        from cocod.runtime.verify import verify_flow

        instance = self.instances.get(name)
        await emit({"event": "progress", "stage": "verify", "name": name})
        async with self.instances.pinned(name) as flow:
            report = await verify_flow(
                flow, repair=repair, progress=emit, lease_wait=None if wait else 0.0
            )
        if report.repair is not None:
            instance.counted_change_at = None  # rows changed: recount in the background
        return {"name": name, **report.to_dict(), "describe": report.describe()}

    async def cmd_query(self, emit: Emit, name: str, text: str, top: int = 5) -> Any:
        async with self.instances.pinned(name, writes=False) as flow:
            output = await flow.query_async(text, top_k=top)
        return {"name": name, "results": output.results}

    async def cmd_search(
        self, emit: Emit, text: str, instance: str | list[str] | None = None, top: int = 10
    ) -> Any:
        names = _instance_names(instance)
        is_explicit = bool(names)
        if is_explicit:
            for name in names:
                self.instances.get(name)  # unknown_flow before any work
        else:
            names = sorted(self.instances.by_name)
        session = SearchSession(context.get_context(), text, top)
        searched: list[str] = []
        skipped: list[dict[str, str]] = []
        for name in names:
            try:
                async with self.instances.pinned(name, writes=False) as flow:
                    await session.add(name, await flow.execution_async())
                searched.append(name)
            except (FlowDefinitionError, SetupError, ProtocolError) as e:
                # Asked for by name: say why it cannot be searched. Otherwise "every
                # instance with a vector index": the others are listed, not fatal.
                if is_explicit:
                    raise
                skipped.append({"name": name, "reason": " ".join(str(e).split())})
        mixed = session.mixed_metrics()
        if mixed is not None:
            raise ProtocolError(ErrorCode.BAD_ARGS, mixed.describe())
        metric = session.metric()
        return {
            "query": text,
            "metric": None if metric is None else metric.name.lower(),
            "higher_is_better": metric is None or metric.name != "L2_DISTANCE",
            "results": await session.merged(),
            "searched": searched,
            "skipped": skipped,
        }

    async def cmd_pause(self, emit: Emit, name: str) -> Any:
        instance = await self.daemon.pause(name)
        return {"name": name, "state": str(instance.state), "paused": instance.paused}

    async def cmd_resume(self, emit: Emit, name: str) -> Any:
        instance = await self.daemon.resume(name)
        return {"name": name, "state": str(instance.state), "paused": instance.paused}

    async def cmd_add(
        self,
        emit: Emit,
        name: str,
        definition: str | None = None,
        params: dict[str, Any] | None = None,
        live: bool = True,
        path: str | None = None,
        flow: str = "text",
    ) -> Any:
        if name in self.instances.by_name:
            raise ProtocolError(ErrorCode.FLOW_EXISTS, f"instance {name!r} already exists")
        if path is not None:
            if definition is not None:
                raise ProtocolError(
                    ErrorCode.BAD_ARGS,
                    "add: give either a definition (module:factory) or --path for a "
                    "built-in flow, not both",
                )
            instance = await self.daemon.add_builtin(name, path, flow, live, params)
            return {"name": name, "state": str(instance.state), **_definition_of(instance)}
        if definition is None:
            raise ProtocolError(
                ErrorCode.BAD_ARGS,
                "add: give a definition (module:factory) or --path DIR for a built-in flow",
            )
        try:
            config = parse_instance(
                name, {"definition": definition, "params": params or {}, "live": live}, "add"
            )
        except SettingsError as e:
            raise ProtocolError(ErrorCode.BAD_ARGS, str(e)) from None
        # Fail now, not in the background, if the definition cannot even be loaded.
        await load_definition_async(config.definition, config.params, self.instances.base_dir, name)
        if name in self.instances.by_name:  # added by another client meanwhile
            raise ProtocolError(ErrorCode.FLOW_EXISTS, f"instance {name!r} already exists")
        await self.daemon.registry.add(config)
        instance = self.instances.add(config, "runtime")
        return {"name": name, "state": str(instance.state), **_definition_of(instance)}

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


def _instance_names(value: str | list[str] | None) -> list[str]:
    """``search``'s instances: a name, ``a,b``, or a list of either; duplicates dropped."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    return list(dict.fromkeys(names))


def _definition_of(instance: Instance) -> dict[str, Any]:
    return {"definition": instance.config.definition, "params": instance.config.params}


async def _report(flow: Flow, operation: str) -> str:
    """Run the flow's setup or drop and return what it printed."""
    out = io.StringIO()
    if operation == "setup":
        await flow.setup_async(out=out)
    else:
        await flow.drop_async(out=out)
    return out.getvalue()


__all__ = ["READ_ONLY_COMMANDS", "Handlers"]
