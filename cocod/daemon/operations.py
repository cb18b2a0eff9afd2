"""What the control handlers ask the daemon to do to its instances, beyond open/close.

:class:`InstanceOperations` is a part of :class:`~cocod.daemon.service.Daemon` kept apart
from its lifecycle: pausing and resuming (persisted in the registry first, so what the
reply says survives a restart) and adding an instance of a built-in flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from cocod.control.protocol import ErrorCode, ProtocolError
from cocod.daemon.config import DaemonConfig
from cocod.daemon.definitions import builtin_instance, load_definition_async
from cocod.daemon.instances import Instance, Instances
from cocod.daemon.registry import RuntimeRegistry


class InstanceOperations:
    config: DaemonConfig
    instances: Instances
    registry: RuntimeRegistry

    async def pause(self, name: str) -> Instance:
        """Pause a live instance: no pass runs, its watcher keeps collecting hints; kept
        across restarts. Raises ProtocolError (unknown_flow, bad_args for an on-demand
        instance) or DatabaseUnavailableError (not persisted, so not paused)."""
        instance = self.instances.get(name)
        if not instance.config.live:
            self.instances.pause(instance)  # raises: nothing to pause
        await self.registry.set_paused(name, True)
        self.instances.pause(instance)
        return instance

    async def resume(self, name: str) -> Instance:
        """Resume a paused instance: it catches up from the hints collected meanwhile
        (after a restart, with a full pass). Resuming one that is not paused is a no-op."""
        instance = self.instances.get(name)
        await self.registry.set_paused(name, False)
        self.instances.resume(instance)
        return instance

    async def add_builtin(
        self,
        name: str,
        path: str | Path,
        flow: str = "text",
        live: bool = True,
        params: dict[str, Any] | None = None,
    ) -> Instance:
        """Add (and persist) an instance of ``cocod.flows:<flow>`` over the folder ``path``,
        writing to a table named after the instance (see :func:`builtin_instance`).

        Raises ProtocolError: flow_exists for a taken name, bad_args for a bad name, flow
        or folder; FlowDefinitionError when the flow cannot be built with these params."""
        if name in self.instances.by_name:
            raise ProtocolError(ErrorCode.FLOW_EXISTS, f"instance {name!r} already exists")
        config = await anyio.to_thread.run_sync(builtin_instance, name, path, flow, live, params)
        # Fail now, not in the background, if the definition cannot even be loaded.
        await load_definition_async(config.definition, config.params, self.config.base_dir, name)
        if name in self.instances.by_name:  # added by another client meanwhile
            raise ProtocolError(ErrorCode.FLOW_EXISTS, f"instance {name!r} already exists")
        await self.registry.add(config)
        return self.instances.add(config, "runtime")
