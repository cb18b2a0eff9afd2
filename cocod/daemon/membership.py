"""The daemon's side of the cluster: joining, leaving, and the shared registry.

:class:`Membership` builds the daemon's :class:`~cocod.daemon.cluster.Cluster` from its
config and library context, runs it as one of the daemon's tasks (started before the
instances, so the first fair share already counts the daemons that are up), and leaves it
at the end of a drain — after every instance released its lease, while the pool still
works. It also re-reads the registry when another daemon adds, removes, pauses or resumes an
instance (``cocod add`` on any daemon), on a notification and at every heartbeat, so
``cocod pause`` reaches the owner whichever daemon it was sent to.

Beside the cluster it runs the daemon's :class:`~cocod.daemon.forwarding.Forwarding`:
``cocod update NAME`` sent to this daemon while another owns ``NAME`` is forwarded to the
owner, and the requests other daemons forward for the instances this one owns run here,
through the same handler as a local command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from cocod.control.protocol import ErrorCode, ProtocolError
from cocod.daemon.cluster import DEREGISTER_DEADLINE_S, Cluster
from cocod.daemon.forwarding import Forwarding
from cocod.daemon.instance_state import State
from cocod.daemon.server import Emit
from cocod.runtime import context
from cocod.runtime.coordination import set_process_holder

if TYPE_CHECKING:
    from cocod.daemon.service import Daemon

log = structlog.get_logger(__name__)


class Membership:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.cluster: Cluster | None = None
        self.forwarding: Forwarding | None = None
        self._scope: anyio.CancelScope | None = None
        self._left = anyio.Event()

    async def join(self, tg: TaskGroup) -> Cluster:
        from cocod import __version__

        daemon, instances = self.daemon, self.daemon.instances
        ctx = context.get_context()
        cluster = Cluster(
            await ctx.pool(),
            await ctx.open_database(),
            ctx.schema,
            lease_timeout=daemon.config.lease_timeout,
            weight=daemon.config.weight,
            version=__version__,
        )
        cluster.count_instances = lambda: sum(i.config.live for i in instances.by_name.values())
        cluster.instance_flows = lambda: {
            name: _flow_name(name) for name, i in instances.by_name.items() if i.config.live
        }
        cluster.on_registry_changed = self.sync_registry
        self.cluster = cluster
        instances.cluster = cluster
        # Leases this process takes beyond its owned instances (an on-demand instance's
        # `cocod update`) name this daemon too.
        set_process_holder(cluster.holder)
        # Before the cluster opens its LISTEN connection: it listens on this one's channel.
        self.forwarding = Forwarding(
            cluster,
            servable=self._servable,
            flow_name_of=_flow_name,
            run=self._run_forwarded,
            is_serving=lambda: not daemon.is_draining,
        )
        await tg.start(self._serve, cluster)
        await tg.start(self.forwarding.serve)
        return cluster

    def _servable(self) -> dict[str, str]:
        """Flow name → instance, for the owned instances whose flow is open (a command
        can run on them now, as it would if it had been sent here)."""
        cluster = self.cluster
        if cluster is None:
            return {}
        return {
            _flow_name(name): name
            for name, i in self.daemon.instances.by_name.items()
            if i.config.live
            and i.flow is not None
            and i.state is not State.STANDBY
            and cluster.owns(name)
        }

    async def _run_forwarded(
        self, name: str, command: str, args: dict[str, Any], emit: Emit
    ) -> Any:
        """A request another daemon forwarded: the local handler runs it, its progress
        events going to ``emit`` (recorded for the requester to relay)."""
        if command != "update":
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{command!r} is not forwarded")
        handlers = self.daemon.handlers
        return await handlers.update_here(emit, name, bool(args.get("full_reprocess")))

    async def _serve(
        self, cluster: Cluster, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            with anyio.CancelScope() as self._scope:
                await cluster.serve(task_status=task_status)
        finally:
            self._left.set()

    async def leave(self, budget: float) -> None:
        """Deregister now (the heartbeat task ends, deleting this daemon's row)."""
        if self._scope is None:
            return
        self._scope.cancel()
        with anyio.move_on_after(min(DEREGISTER_DEADLINE_S, budget)):
            await self._left.wait()

    async def sync_registry(self) -> None:
        """Instances another daemon added or removed (``cocod add`` on any daemon)."""
        daemon, instances = self.daemon, self.daemon.instances
        if daemon.is_draining or not daemon.is_ready:
            return
        # Only instances known before the read may be removed for missing from it: one
        # added here meanwhile (by a command) is not in that read yet.
        known = {n for n, i in instances.by_name.items() if i.origin == "runtime"}
        was_paused = {n: i.paused for n, i in instances.by_name.items() if i.config.live}
        try:
            loaded = await daemon.registry.load()
            paused = await daemon.registry.load_paused()
        except Exception as e:  # an outage: the database supervisor handles it
            log.debug("daemon.registry_sync_failed", error=f"{type(e).__name__}: {e}")
            return
        for name, instance_config in loaded.items():
            if name not in instances.by_name and name not in daemon.config.flows:
                log.info("instance.added_elsewhere", instance=name)
                instances.add(instance_config, "runtime")
        for name, before in was_paused.items():
            instance = instances.by_name.get(name)
            # Paused or resumed on another daemon (not here while we read: that wins).
            if instance is None or instance.paused != before or before == (name in paused):
                continue
            event = "instance.resumed_elsewhere" if before else "instance.paused_elsewhere"
            log.info(event, instance=name)
            (instances.pause if not before else instances.resume)(instance)
        for name in known - set(loaded):
            instance = instances.by_name.get(name)
            if instance is not None and instance.origin == "runtime":
                log.info("instance.removed_elsewhere", instance=name)
                await instances.remove(instance)


def _flow_name(name: str) -> str:
    return context.get_app_namespace(trailing_delimiter=".") + name


__all__ = ["Membership"]
