"""Flow instances and their supervision.

Each live instance runs in its own cancel scope: open the flow (the factory import and
the definition run in a worker thread), set it up, then serve its live updater, started
with ``task_group.start()`` so "its watcher is registered and its catch-up has begun" is a
handshake, not a guess. A failure is logged with the instance bound, the instance backs
off exponentially (with jitter) and retries, and after repeated failures it stays FAILED
until a command opens it again; other instances never notice. A failure because the
database is unreachable is not the flow's fault: the instance shows DATABASE_DOWN, waits
for the database supervisor to see it back, and does not count it towards FAILED.

On-demand instances (``live = false``) are opened when a command needs them and closed
when idle or when too many are open; opening one also sets it up (idempotent, as v0's
examples do), unless its config says ``auto_setup = false``. A command holds its instance
with :meth:`Instances.pinned`; a pinned instance is never reaped or evicted.

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
import random
import time
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
from cocod.daemon.database import retry_delay
from cocod.daemon.definitions import load_definition_async
from cocod.daemon.instance_state import RUNNING, Instance, State
from cocod.daemon.ownership import OwnershipLost, not_owner, run_owned
from cocod.errors import CocodError, DatabaseUnavailableError
from cocod.runtime import context
from cocod.runtime.flow import Flow, open_flow
from cocod.runtime.live_updater import FlowLiveUpdaterOptions

__all__ = ["Instance", "Instances", "State"]

log = structlog.get_logger(__name__)

MAX_FAILURES = 8  # backoff 1, 2, 4 … 60 s: about two minutes before FAILED
MAX_BACKOFF_SECONDS = 60.0


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
        self.max_open = max_open
        self.idle_ttl = idle_ttl
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

    def _set_state(self, instance: Instance, state: State) -> None:
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
                self._set_state(instance, State.DATABASE_DOWN)
            elif not is_down and instance.state is State.DATABASE_DOWN:
                if instance.updater is None:
                    continue  # still waiting in _supervise; it sets its own state
                caught_up = bool(instance.updater.snapshot().get("caught_up"))
                self._set_state(instance, State.WATCHING if caught_up else State.CATCHING_UP)

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

    async def _attach(self, instance: Instance, flow: Flow) -> None:
        instance.flow = flow
        instance.execution = await flow.execution_async()  # built already: no thread

    def _close_flow(self, instance: Instance) -> None:
        if instance.flow is not None:
            calls = instance.function_calls()
            instance.execution = None
            instance.retired_calls = calls
            instance.flow.close()
            instance.flow = None

    async def _ensure_open(self, instance: Instance) -> Flow:
        """The instance's Flow, opening an on-demand instance if needed."""
        instance.touch()
        if instance.flow is not None:
            return instance.flow
        try:
            flow = await self.open_flow(instance)
            try:
                if instance.config.auto_setup:
                    # Idempotent and cheap when up to date: a never-set-up on-demand
                    # instance works on its first command, as v0's open_flow+setup does.
                    await flow.setup_async()
            except BaseException:
                flow.close()
                raise
        except CocodError as e:
            instance.last_error = str(e)
            raise
        if instance.flow is not None:  # another command opened it meanwhile
            flow.close()
            return instance.flow
        await self._attach(instance, flow)
        self._set_state(instance, State.OPEN)
        await self._evict_beyond_limit(keep=instance)
        return flow

    @contextlib.asynccontextmanager
    async def pinned(self, name: str, *, writes: bool = True) -> AsyncIterator[Flow]:
        """The instance's flow for one command; it is not reaped or evicted meanwhile.

        An on-demand instance is opened if needed (and stays open until idle). A stopped
        live instance gets a flow of its own for just this command (setup, drop, update
        while it is closed), closed afterwards; so does a STANDBY one for a command that
        only reads (``writes=False``), while one that writes is refused ``not_owner``.
        """
        instance = self.get(name)
        instance.pins += 1
        try:
            if instance.state is State.STANDBY and writes:
                owner = self.cluster.owner_of(name) if self.cluster is not None else None
                raise not_owner(name, owner)
            if instance.flow is not None or not instance.config.live:
                yield await self._ensure_open(instance)
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
        finally:
            instance.pins -= 1
            instance.touch()

    async def _evict_beyond_limit(self, keep: Instance) -> None:
        open_on_demand = [
            i for i in self.by_name.values() if not i.config.live and i.flow is not None
        ]
        open_on_demand.sort(key=lambda i: i.last_used)
        idle = [i for i in open_on_demand if i is not keep and not i.is_pinned]
        while len(open_on_demand) > self.max_open and idle:
            victim = idle.pop(0)
            open_on_demand.remove(victim)
            log.info("instance.evicted", instance=victim.name, reason="max_open_flows")
            self.close_on_demand(victim)

    async def open_on_demand(self, instance: Instance) -> None:
        await self._ensure_open(instance)

    def close_on_demand(self, instance: Instance) -> None:
        self._close_flow(instance)
        self._set_state(instance, State.STOPPED)

    async def reap_idle(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Close on-demand instances untouched for longer than idle_ttl."""
        task_status.started()
        while True:
            await anyio.sleep(min(max(self.idle_ttl / 4, 0.05), 30.0))
            now = time.monotonic()
            for instance in list(self.by_name.values()):
                if (
                    not instance.config.live
                    and instance.flow is not None
                    and not instance.is_pinned
                    and now - instance.last_used > self.idle_ttl
                ):
                    log.info("instance.idle_closed", instance=instance.name)
                    self.close_on_demand(instance)

    # -- live supervision -------------------------------------------------------------------
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
        self._tg.start_soon(self._supervise, instance, name=f"instance {instance.name}")

    async def stop(self, instance: Instance) -> None:
        """Cancel the instance's task and wait until it has closed its flow."""
        if instance.scope is not None:
            self._set_state(instance, State.STOPPING)
            instance.scope.cancel()
            await instance.stopped.wait()
        else:
            self._close_flow(instance)
            self._set_state(instance, State.STOPPED)

    async def remove(self, instance: Instance) -> None:
        await self.stop(instance)
        if self.by_name.get(instance.name) is instance:
            del self.by_name[instance.name]
        if instance.origin == "runtime":
            # `cocod remove` (the registry forgot its pause too); a config instance removed
            # by a reload keeps its pause for when it comes back, changed or not.
            self.paused_names.discard(instance.name)

    async def _supervise(self, instance: Instance) -> None:
        scope = instance.scope
        assert scope is not None
        structlog.contextvars.bind_contextvars(instance=instance.name)
        try:
            with scope:
                while True:
                    try:
                        await self._run(instance)
                        return
                    except Exception as group:
                        e = _leaf(group)
                        if isinstance(e, OwnershipLost):
                            # Not a failure: another daemon owns it now, or will.
                            log.info("instance.ownership_ended", reason=str(e))
                            self._teardown(instance)
                            continue
                        instance.last_error = f"{type(e).__name__}: {e}"
                        self._teardown(instance)
                        instance.started.set()
                        if isinstance(e, DatabaseUnavailableError):
                            instance.database_failures += 1
                            await self._wait_for_database(
                                instance, str(e), instance.database_failures
                            )
                            continue
                        instance.failures += 1
                        log.error(
                            "instance.failed",
                            instance=instance.name,
                            error=instance.last_error,
                            failures=instance.failures,
                        )
                        if instance.failures >= MAX_FAILURES:
                            self._set_state(instance, State.FAILED)
                            return
                        self._set_state(instance, State.BACKOFF)
                        ceiling = min(2.0 ** (instance.failures - 1), MAX_BACKOFF_SECONDS)
                        await anyio.sleep(ceiling * random.uniform(0.75, 1.0))
        finally:
            # Nothing to await here: the updater's own task group already wound down
            # (its in-flight commit is bounded by the daemon's drain budget).
            self._teardown(instance)
            if instance.state is not State.FAILED:
                self._set_state(instance, State.STOPPED)
            instance.scope = None
            instance.started.set()
            instance.stopped.set()

    async def _wait_for_database(self, instance: Instance, reason: str, failures: int) -> None:
        """Not the flow's fault: wait until the database supervisor sees it back."""
        log.warning("instance.database_unavailable", instance=instance.name, error=reason)
        self.on_database_unavailable(reason)
        self._set_state(instance, State.DATABASE_DOWN)
        await self.wait_database_up()
        # Also back off on our own count: a database that answers probes but fails this
        # instance (or flaps) must not make this loop spin.
        await anyio.sleep(retry_delay(failures))

    def _teardown(self, instance: Instance) -> None:
        if instance.updater is not None:
            instance.retired.merge(instance.updater.counters())
        instance.updater = None
        self._close_flow(instance)

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
        self._set_state(instance, instance.state)
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
            self._set_state(instance, State.WATCHING if caught_up else State.CATCHING_UP)
        log.info("instance.resumed", instance=instance.name)

    async def _run(self, instance: Instance) -> None:
        if self.cluster is None or not instance.config.live:
            await self._run_live(instance)
            return
        namespace = context.get_app_namespace(trailing_delimiter=".")
        await run_owned(
            instance,
            self.cluster,
            f"{namespace}{instance.name}",
            standby=lambda: self._stand_by(instance),
            run_live=lambda: self._run_live(instance),
        )

    def _stand_by(self, instance: Instance) -> None:
        self._set_state(instance, State.STANDBY)
        instance.started.set()  # READY does not wait for another daemon's instances

    async def _run_live(self, instance: Instance) -> None:
        self._set_state(instance, State.STARTING)
        await self._attach(instance, await self.open_flow(instance))
        assert instance.flow is not None
        await instance.flow.setup_async()
        self._set_state(instance, State.CATCHING_UP)
        updater = instance.flow.live_updater(FlowLiveUpdaterOptions(live_mode=True))
        updater.report_progress_to(instance.progress)
        if instance.paused:
            updater.pause()  # its watcher starts; its catch-up pass waits for resume
        async with anyio.create_task_group() as tg:
            # Returns once the watchers are registered and the catch-up pass has begun.
            await tg.start(updater.serve)
            instance.updater = updater  # only a started updater: status reads it
            if instance.paused != updater.is_paused:  # paused or resumed while it started
                (updater.pause if instance.paused else updater.resume)()
            instance.started.set()
            await updater.wait_caught_up_async()
            snapshot = updater.snapshot()
            instance.last_update = snapshot
            instance.last_error = snapshot["last_error"]
            instance.database_failures = 0
            if not snapshot["last_error"]:
                instance.failures = 0
            self._set_state(instance, State.WATCHING)
            # serve() runs until this instance's scope is cancelled (or it fails).


async def _nothing() -> None:
    return None


def _leaf(error: BaseException) -> BaseException:
    """The one real error inside (nested) task-group exception groups."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
