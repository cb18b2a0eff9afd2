"""The daemon's side of the cluster: joining, leaving, and the shared registry.

:class:`Membership` builds the daemon's :class:`~cocod.daemon.cluster.Cluster` from its
config and library context, runs it as one of the daemon's tasks (started before the
instances, so the first fair share already counts the daemons that are up), and leaves it
at the end of a drain — after every instance released its lease, while the pool still
works. It also re-reads the registry when another daemon adds, removes, pauses or resumes an
instance (``cocod add`` on any daemon), on a notification and at every heartbeat, so
``cocod pause`` reaches the owner whichever daemon it was sent to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from cocod.daemon.cluster import DEREGISTER_DEADLINE_S, Cluster
from cocod.runtime import context
from cocod.runtime.coordination import set_process_holder

if TYPE_CHECKING:
    from cocod.daemon.service import Daemon

log = structlog.get_logger(__name__)


class Membership:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.cluster: Cluster | None = None
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
            name: context.get_app_namespace(trailing_delimiter=".") + name
            for name, i in instances.by_name.items()
            if i.config.live
        }
        cluster.on_registry_changed = self.sync_registry
        self.cluster = cluster
        instances.cluster = cluster
        # Leases this process takes beyond its owned instances (an on-demand instance's
        # `cocod update`) name this daemon too.
        set_process_holder(cluster.holder)
        await tg.start(self._serve, cluster)
        return cluster

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


__all__ = ["Membership"]
