"""Flow instances and their supervision.

Each live instance runs in its own cancel scope: open the flow, set it up, run its live
updater. A failure is logged with the instance bound, the instance backs off
exponentially and retries, and after repeated failures it stays FAILED until a command
opens it again; other instances never notice. On-demand instances (``live = false``) are
opened when a command needs them and closed when idle or when too many are open.
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup

from cocod.daemon.config import InstanceConfig
from cocod.daemon.definitions import load_definition
from cocod.errors import CocodError
from cocod.runtime.flow import Flow, open_flow
from cocod.runtime.live_updater import FlowLiveUpdater, FlowLiveUpdaterOptions

log = structlog.get_logger(__name__)

MAX_FAILURES = 8  # backoff 1, 2, 4 … 60 s: about two minutes before FAILED
MAX_BACKOFF_SECONDS = 60.0


class State(enum.StrEnum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    CATCHING_UP = "CATCHING_UP"
    WATCHING = "WATCHING"
    OPEN = "OPEN"  # an on-demand instance that is open
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    FAILED = "FAILED"


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
    active_commands: int = 0  # an instance serving a command is never reaped or evicted

    @property
    def name(self) -> str:
        return self.config.name

    def touch(self) -> None:
        self.last_used = time.monotonic()


class Instances:
    """All instances of the daemon and the tasks that run them."""

    def __init__(self, base_dir: Path | None, max_open: int, idle_ttl: float) -> None:
        self.base_dir = base_dir
        self.max_open = max_open
        self.idle_ttl = idle_ttl
        self.by_name: dict[str, Instance] = {}
        self._tg: TaskGroup | None = None
        self.on_state_change: Callable[[], None] = lambda: None

    def bind(self, tg: TaskGroup) -> None:
        self._tg = tg

    def get(self, name: str) -> Instance:
        instance = self.by_name.get(name)
        if instance is None:
            from cocod.control.protocol import ErrorCode, ProtocolError

            known = ", ".join(sorted(self.by_name)) or "none"
            raise ProtocolError(
                ErrorCode.UNKNOWN_FLOW, f"unknown flow instance {name!r} (known: {known})"
            )
        return instance

    def _set_state(self, instance: Instance, state: State) -> None:
        instance.state = state
        log.info("instance.state", instance=instance.name, state=str(state))
        self.on_state_change()

    # -- opening ---------------------------------------------------------------------------
    def _open_flow(self, instance: Instance) -> Flow:
        config = instance.config
        fl_def = load_definition(config.definition, config.params, self.base_dir, config.name)
        return open_flow(config.name, fl_def)

    def _close_flow(self, instance: Instance) -> None:
        if instance.flow is not None:
            instance.flow.close()
            instance.flow = None

    async def ensure_open(self, instance: Instance) -> Flow:
        """The instance's Flow, opening an on-demand instance if needed."""
        instance.touch()
        if instance.flow is not None:
            return instance.flow
        if instance.config.live:
            from cocod.control.protocol import ErrorCode, ProtocolError

            raise ProtocolError(
                ErrorCode.FLOW_FAILED,
                f"live instance {instance.name!r} is {instance.state}; open it to start it",
            )
        try:
            instance.flow = self._open_flow(instance)
        except CocodError as e:
            instance.last_error = str(e)
            raise
        if not instance.config.live:
            self._set_state(instance, State.OPEN)
            await self._evict_beyond_limit(keep=instance)
        return instance.flow

    async def _evict_beyond_limit(self, keep: Instance) -> None:
        open_on_demand = [
            i for i in self.by_name.values() if not i.config.live and i.flow is not None
        ]
        open_on_demand.sort(key=lambda i: i.last_used)
        idle = [i for i in open_on_demand if i is not keep and not i.active_commands]
        while len(open_on_demand) > self.max_open and idle:
            victim = idle.pop(0)
            open_on_demand.remove(victim)
            log.info("instance.evicted", instance=victim.name, reason="max_open_flows")
            self.close_on_demand(victim)

    def close_on_demand(self, instance: Instance) -> None:
        self._close_flow(instance)
        self._set_state(instance, State.STOPPED)

    async def reap_idle(self) -> None:
        """Close on-demand instances untouched for longer than idle_ttl."""
        while True:
            await anyio.sleep(min(max(self.idle_ttl / 4, 0.05), 30.0))
            now = time.monotonic()
            for instance in list(self.by_name.values()):
                if (
                    not instance.config.live
                    and instance.flow is not None
                    and not instance.active_commands
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
        assert self._tg is not None
        if instance.scope is not None:
            return
        instance.failures = 0
        instance.stopped = anyio.Event()
        instance.scope = anyio.CancelScope()
        self._tg.start_soon(self._supervise, instance)

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
                    except Exception as e:
                        instance.failures += 1
                        instance.last_error = f"{type(e).__name__}: {e}"
                        log.error(
                            "instance.failed",
                            instance=instance.name,
                            error=instance.last_error,
                            failures=instance.failures,
                        )
                        await self._teardown(instance)
                        if instance.failures >= MAX_FAILURES:
                            self._set_state(instance, State.FAILED)
                            return
                        self._set_state(instance, State.BACKOFF)
                        await anyio.sleep(min(2.0 ** (instance.failures - 1), MAX_BACKOFF_SECONDS))
        finally:
            with anyio.CancelScope(shield=True):
                await self._teardown(instance)
            if instance.state not in (State.FAILED,):
                self._set_state(instance, State.STOPPED)
            instance.scope = None
            instance.stopped.set()

    async def _teardown(self, instance: Instance) -> None:
        updater, instance.updater = instance.updater, None
        if updater is not None:
            updater.abort()
            try:
                await updater.wait_async()
            except Exception as e:
                log.debug("instance.updater_ended", instance=instance.name, error=str(e))
        self._close_flow(instance)

    async def _run_live(self, instance: Instance) -> None:
        self._set_state(instance, State.STARTING)
        instance.flow = self._open_flow(instance)
        await instance.flow.setup_async()
        self._set_state(instance, State.CATCHING_UP)
        updater = FlowLiveUpdater(instance.flow, FlowLiveUpdaterOptions(live_mode=True))
        try:
            await updater.start_async()
        except BaseException:
            with contextlib.suppress(Exception):  # "not started" when it failed early
                updater.abort()
            raise
        instance.updater = updater  # only a started updater: status reads it
        await updater.wait_caught_up_async()
        snapshot = updater.snapshot()
        instance.last_update = snapshot
        instance.last_error = snapshot["last_error"]
        if not snapshot["last_error"]:
            instance.failures = 0
        self._set_state(instance, State.WATCHING)
        await updater.wait_async()

    async def run_exclusive(
        self, instance: Instance, action: Callable[[Flow], Awaitable[Any]]
    ) -> Any:
        """Run a command's action on the instance's flow (opening it when on demand)."""
        instance.active_commands += 1
        try:
            flow = await self.ensure_open(instance)
            return await action(flow)
        finally:
            instance.active_commands -= 1
            instance.touch()
