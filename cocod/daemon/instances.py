"""The daemon's flow instances: the registry, their states, and the flow a command uses.

Each live instance runs in its own cancel scope, started by :meth:`Instances.start`
(:mod:`cocod.daemon.live_supervision`: open, set up, serve its live updater, back off and
retry; DATABASE_DOWN while the database cannot be reached).

On-demand instances (``live = false``) are opened when a command needs them and closed
when idle or when too many are open, by one :class:`cocod.FlowInstances`
(:mod:`cocod.daemon.on_demand`); opening one also sets it up (idempotent, as v0's examples
do), unless its config says ``auto_setup = false``. A command holds its instance with
:meth:`Instances.pinned`; a pinned instance is never closed under it.

A paused live instance (:meth:`Instances.pause`; the daemon persists it) keeps its watcher
and its hints but runs no pass, and shows PAUSED; its updater is created paused after a
restart, so its catch-up pass runs on resume. Each instance's passes report progress to
its :class:`~cocod.daemon.progress_view.InstanceProgress`, and its counters outlive its
updater and flow (retired into the instance when they close) so metrics stay monotonic.

When daemons share the database (:mod:`cocod.daemon.cluster`), a live instance runs only
while this daemon holds its lease (:func:`cocod.daemon.ownership.run_owned`); otherwise it
is STANDBY: no flow open, no watcher. Losing or handing over the lease is not a failure:
the instance goes back to STANDBY. Commands that write a STANDBY instance are answered
``not_owner`` naming the owner; reads (query, search) open a flow for just that command.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from cocod.control.protocol import ErrorCode, ProtocolError
from cocod.daemon.cluster import Cluster
from cocod.daemon.config import InstanceConfig
from cocod.daemon.cpu_budget import limit_torch_threads
from cocod.daemon.definitions import load_definition_async
from cocod.daemon.instance_state import RUNNING, Instance, State
from cocod.daemon.live_supervision import MAX_FAILURES, supervise
from cocod.daemon.on_demand import OnDemandFlows
from cocod.daemon.ownership import not_owner
from cocod.errors import DatabaseUnavailableError
from cocod.runtime.flow import Flow, open_flow

__all__ = ["MAX_FAILURES", "Instance", "Instances", "State"]

log = structlog.get_logger(__name__)


class Instances:
    """All instances of the daemon and the tasks that run them."""

    def __init__(
        self,
        base_dir: Path | None,
        max_open: int,
        idle_ttl: float,
        embed_threads: int | None = None,
    ) -> None:
        self.base_dir = base_dir
        self.embed_threads = embed_threads
        self.by_name: dict[str, Instance] = {}
        self.paused_names: set[str] = set()
        """Instances paused by command (loaded from the registry at start-up)."""
        self.is_database_down = False
        self._tg: TaskGroup | None = None
        self.on_state_change: Callable[[], None] = lambda: None
        self.on_database_unavailable: Callable[[str], None] = lambda reason: None
        self.wait_database_up: Callable[[], Awaitable[None]] = _nothing
        self.cluster: Cluster | None = None
        """Set when this daemon is a cluster member: live instances run only when owned."""
        self.on_demand = OnDemandFlows(
            max_open=max_open,
            idle_ttl=idle_ttl,
            lookup=self.by_name.get,
            open_flow=self.open_flow,
            set_state=self.set_state,
        )

    @property
    def max_open(self) -> int:
        """``max_open_flows``: open on-demand flows past it close, least recently used first."""
        return self.on_demand.cache.maxsize

    @max_open.setter
    def max_open(self, value: int) -> None:
        self.on_demand.cache.maxsize = value

    @property
    def idle_ttl(self) -> float:
        """``idle_ttl``: an on-demand flow unused this long is closed."""
        return self.on_demand.cache.ttl

    @idle_ttl.setter
    def idle_ttl(self, value: float) -> None:
        self.on_demand.cache.ttl = value

    def bind(self, tg: TaskGroup) -> None:
        self._tg = tg

    def get(self, name: str) -> Instance:
        instance = self.by_name.get(name)
        if instance is None:
            known = ", ".join(sorted(self.by_name)) or "none"
            raise ProtocolError(
                ErrorCode.UNKNOWN_FLOW, f"unknown flow instance {name!r} (known: {known})"
            )
        return instance

    def set_state(self, instance: Instance, state: State) -> None:
        if instance.paused and state in (*RUNNING, State.DATABASE_DOWN):
            state = State.PAUSED
        elif self.is_database_down and state in RUNNING:
            state = State.DATABASE_DOWN
        if instance.state is state:
            return
        instance.state = state
        log.info("instance.state", instance=instance.name, state=str(state))
        self.on_state_change()

    def set_database_down(self, is_down: bool) -> None:
        """Running live instances show DATABASE_DOWN while the database is unreachable."""
        self.is_database_down = is_down
        for instance in self.by_name.values():
            if is_down and instance.state in RUNNING:
                self.set_state(instance, State.DATABASE_DOWN)
            elif not is_down and instance.state is State.DATABASE_DOWN:
                if instance.updater is None:
                    continue  # still waiting in _supervise; it sets its own state
                caught_up = bool(instance.updater.snapshot().get("caught_up"))
                self.set_state(instance, State.WATCHING if caught_up else State.CATCHING_UP)

    # -- opening ---------------------------------------------------------------------------
    async def open_flow(self, instance: Instance) -> Flow:
        """A new Flow for the instance, built in worker threads (it runs user code)."""
        config = instance.config
        fl_def = await load_definition_async(
            config.definition, config.params, self.base_dir, config.name
        )
        flow = open_flow(config.name, fl_def)
        try:
            await flow.execution_async()  # the definition function runs, in a thread
        except BaseException:
            flow.close()
            raise
        # The definition may have imported torch; its model loads later, in a pass.
        limit_torch_threads(self.embed_threads)
        return flow

    async def attach_flow(self, instance: Instance, flow: Flow) -> None:
        instance.flow = flow
        instance.execution = await flow.execution_async()  # built already: no thread

    def close_flow(self, instance: Instance) -> None:
        if instance.flow is not None:
            calls = instance.function_calls()
            instance.execution = None
            instance.retired_calls = calls
            instance.flow.close()
            instance.flow = None

    @contextlib.asynccontextmanager
    async def pinned(self, name: str, *, writes: bool = True) -> AsyncIterator[Flow]:
        """The instance's flow for one command; it is not closed under the command.

        An on-demand instance is opened if needed, through :attr:`on_demand` (and stays
        open until idle or evicted). A stopped live instance gets a flow of its own for
        just this command (setup, drop, update while it is closed), closed afterwards; so
        does a STANDBY one for a command that only reads (``writes=False``), while one that
        writes is refused ``not_owner``.
        """
        instance = self.get(name)
        if instance.state is State.STANDBY and writes:
            owner = self.cluster.owner_of(name) if self.cluster is not None else None
            raise not_owner(name, owner)
        if not instance.config.live:
            async with self.on_demand.use(instance) as flow:
                yield flow
        elif instance.flow is not None:
            yield instance.flow
        elif instance.scope is None or instance.state is State.STANDBY:
            flow = await self.open_flow(instance)
            try:
                yield flow
            finally:
                flow.close()
        elif instance.state is State.DATABASE_DOWN:
            raise DatabaseUnavailableError(
                f"instance {instance.name!r} is waiting for the database, which cannot "
                "be reached; the daemon is restarting or probing it (see `cocod status`)"
            )
        else:
            raise ProtocolError(
                ErrorCode.FLOW_FAILED,
                f"live instance {instance.name!r} is {instance.state}; "
                "wait for it to start, or close it and retry",
            )

    async def open_on_demand(self, instance: Instance) -> None:
        await self.on_demand.open(instance)

    def close_on_demand(self, instance: Instance) -> None:
        self.on_demand.close(instance)

    async def reap_idle(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Close on-demand instances idle longer than idle_ttl (runs until cancelled)."""
        await self.on_demand.serve_expiry(task_status=task_status)

    # -- the registry, live instances' tasks ------------------------------------------
    def add(self, config: InstanceConfig, origin: str) -> Instance:
        instance = Instance(config, origin, paused=config.name in self.paused_names)
        self.by_name[config.name] = instance
        if config.live:
            self.start(instance)
        return instance

    def start(self, instance: Instance) -> None:
        """Start a live instance's task (it reports through ``instance.started``)."""
        assert self._tg is not None
        if instance.scope is not None:
            return
        instance.failures = 0
        instance.stopped = anyio.Event()
        instance.started = anyio.Event()
        instance.scope = anyio.CancelScope()
        self._tg.start_soon(supervise, self, instance, name=f"instance {instance.name}")

    async def stop(self, instance: Instance) -> None:
        """Cancel the instance's task and wait until it has closed its flow."""
        if instance.scope is not None:
            self.set_state(instance, State.STOPPING)
            instance.scope.cancel()
            await instance.stopped.wait()
        elif not instance.config.live:
            self.on_demand.close(instance)
        else:
            self.close_flow(instance)
            self.set_state(instance, State.STOPPED)

    async def remove(self, instance: Instance) -> None:
        await self.stop(instance)
        if self.by_name.get(instance.name) is instance:
            del self.by_name[instance.name]
        if instance.origin == "runtime":
            # `cocod remove` (the registry forgot its pause too); a config instance removed
            # by a reload keeps its pause for when it comes back, changed or not.
            self.paused_names.discard(instance.name)

    # -- pausing ----------------------------------------------------------------------------
    def pause(self, instance: Instance) -> None:
        """No pass runs (the running one stops); the watcher keeps collecting hints.

        Persisting it is the caller's job (:meth:`cocod.daemon.service.Daemon.pause`)."""
        if not instance.config.live:
            raise ProtocolError(
                ErrorCode.BAD_ARGS,
                f"instance {instance.name!r} is on-demand: it updates only when asked "
                f"(`cocod update {instance.name}`), so there is nothing to pause",
            )
        self.paused_names.add(instance.name)
        if instance.paused:
            return
        instance.paused = True
        if instance.updater is not None:
            instance.updater.pause()
        self.set_state(instance, instance.state)
        log.info("instance.paused", instance=instance.name)

    def resume(self, instance: Instance) -> None:
        """Catch up from the hints collected while paused (a full pass after a restart)."""
        self.paused_names.discard(instance.name)
        if not instance.paused:
            return
        instance.paused = False
        updater = instance.updater
        if updater is not None:
            updater.resume()
        if instance.state is State.PAUSED:
            caught_up = updater is not None and bool(updater.snapshot().get("caught_up"))
            self.set_state(instance, State.WATCHING if caught_up else State.CATCHING_UP)
        log.info("instance.resumed", instance=instance.name)


async def _nothing() -> None:
    return None
