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
when idle or when too many are open. A command holds its instance with
:meth:`Instances.pinned`; a pinned instance is never reaped or evicted.
"""

from __future__ import annotations

import contextlib
import enum
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from cocod.control.protocol import ErrorCode, ProtocolError
from cocod.daemon.config import InstanceConfig
from cocod.daemon.database import retry_delay
from cocod.daemon.definitions import load_definition_async
from cocod.errors import CocodError, DatabaseUnavailableError
from cocod.runtime.flow import Flow, open_flow
from cocod.runtime.live_updater import FlowLiveUpdater, FlowLiveUpdaterOptions

log = structlog.get_logger(__name__)

MAX_FAILURES = 8  # backoff 1, 2, 4 … 60 s: about two minutes before FAILED
MAX_BACKOFF_SECONDS = 60.0


class State(enum.StrEnum):
    """What ``ls`` and ``status`` show for an instance.

    STOPPED → STARTING → CATCHING_UP → WATCHING for a live instance; BACKOFF between
    failed attempts, FAILED after MAX_FAILURES of them; STOPPING while its task winds
    down; OPEN for an open on-demand instance; DATABASE_DOWN while the database cannot be
    reached (the updater keeps its pending hints; nothing spins). Reserved for later:
    PAUSED (stopped by a command, persisted) and STANDBY (another daemon sharing the
    database owns the instance).
    """

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    CATCHING_UP = "CATCHING_UP"
    WATCHING = "WATCHING"
    OPEN = "OPEN"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    FAILED = "FAILED"
    DATABASE_DOWN = "DATABASE_DOWN"


_RUNNING = (State.CATCHING_UP, State.WATCHING)


@dataclass(eq=False)
class Instance:
    config: InstanceConfig
    origin: str  # "config" or "runtime"
    state: State = State.STOPPED
    flow: Flow | None = None
    updater: FlowLiveUpdater | None = None
    failures: int = 0
    last_error: str | None = None
    last_used: float = field(default_factory=time.monotonic)
    last_update: dict[str, Any] | None = None
    scope: anyio.CancelScope | None = None
    stopped: anyio.Event = field(default_factory=anyio.Event)
    started: anyio.Event = field(default_factory=anyio.Event)
    """Set once this attempt's watcher is registered and catch-up began, or it failed."""
    row_counts: dict[str, int | None] | None = None
    row_counts_at: float | None = None
    counted_change_at: float | None = None
    pins: int = 0
    database_failures: int = 0  # in a row, while opening; they do not lead to FAILED

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_pinned(self) -> bool:
        return self.pins > 0

    def touch(self) -> None:
        self.last_used = time.monotonic()


class Instances:
    """All instances of the daemon and the tasks that run them."""

    def __init__(self, base_dir: Path | None, max_open: int, idle_ttl: float) -> None:
        self.base_dir = base_dir
        self.max_open = max_open
        self.idle_ttl = idle_ttl
        self.by_name: dict[str, Instance] = {}
        self.is_database_down = False
        self._tg: TaskGroup | None = None
        self.on_state_change: Callable[[], None] = lambda: None
        self.on_database_unavailable: Callable[[str], None] = lambda reason: None
        self.wait_database_up: Callable[[], Awaitable[None]] = _nothing

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
        if self.is_database_down and state in _RUNNING:
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
            if is_down and instance.state in _RUNNING:
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
        return flow

    def _close_flow(self, instance: Instance) -> None:
        if instance.flow is not None:
            instance.flow.close()
            instance.flow = None

    async def _ensure_open(self, instance: Instance) -> Flow:
        """The instance's Flow, opening an on-demand instance if needed."""
        instance.touch()
        if instance.flow is not None:
            return instance.flow
        try:
            instance.flow = await self.open_flow(instance)
        except CocodError as e:
            instance.last_error = str(e)
            raise
        self._set_state(instance, State.OPEN)
        await self._evict_beyond_limit(keep=instance)
        return instance.flow

    @contextlib.asynccontextmanager
    async def pinned(self, name: str) -> AsyncIterator[Flow]:
        """The instance's flow for one command; it is not reaped or evicted meanwhile.

        An on-demand instance is opened if needed (and stays open until idle). A stopped
        live instance gets a flow of its own for just this command (setup, drop, update
        while it is closed), closed afterwards.
        """
        instance = self.get(name)
        instance.pins += 1
        try:
            if instance.flow is not None or not instance.config.live:
                yield await self._ensure_open(instance)
            elif instance.scope is None:
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
        instance = Instance(config, origin)
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

    async def _supervise(self, instance: Instance) -> None:
        scope = instance.scope
        assert scope is not None
        structlog.contextvars.bind_contextvars(instance=instance.name)
        try:
            with scope:
                while True:
                    try:
                        await self._run_live(instance)
                        return
                    except Exception as group:
                        e = _leaf(group)
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
        instance.updater = None
        self._close_flow(instance)

    async def _run_live(self, instance: Instance) -> None:
        self._set_state(instance, State.STARTING)
        instance.flow = await self.open_flow(instance)
        await instance.flow.setup_async()
        self._set_state(instance, State.CATCHING_UP)
        updater = instance.flow.live_updater(FlowLiveUpdaterOptions(live_mode=True))
        async with anyio.create_task_group() as tg:
            # Returns once the watchers are registered and the catch-up pass has begun.
            await tg.start(updater.serve)
            instance.updater = updater  # only a started updater: status reads it
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
