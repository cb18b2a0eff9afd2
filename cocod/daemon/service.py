"""The daemon's composition root: library, registry, instances, control socket, signals.

Start-up order is explicit: settings → database → registry → instances (each live one
starts its catch-up) → control socket → READY. SIGTERM/SIGINT drain (refuse new commands,
cancel every updater — a commit in flight is shielded and completes, rows not yet
committed are redone by the next catch-up — close the pool, stop the embedded Postgres)
and exit 0; a second SIGINT exits at once. SIGHUP re-reads config.toml and
applies the difference without touching unchanged instances.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import SocketListener, TaskStatus

from cocod.daemon.activation import take_inherited_socket
from cocod.daemon.config import DaemonConfig, InstanceConfig, load_config
from cocod.daemon.handlers import Handlers
from cocod.daemon.instances import Instances, State
from cocod.daemon.notify import Notifier, watchdog_interval
from cocod.daemon.registry import RuntimeRegistry
from cocod.daemon.server import open_listener, serve_control
from cocod.runtime import context
from cocod.runtime.bridge import bridge
from cocod.settings import DatabaseConnectionSpec, Settings

log = structlog.get_logger(__name__)

READY_TIMEOUT_SECONDS = 30.0
"""READY is sent at the latest this long after start, even if an instance is slow."""


class Daemon:
    def __init__(self, config: DaemonConfig, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.instances = Instances(config.base_dir, config.max_open_flows, config.idle_ttl)
        self.instances.on_state_change = self._report_status
        self.handlers = Handlers(self)
        self.registry: RuntimeRegistry
        self.is_draining = False
        self._shutdown = anyio.Event()
        self._is_ready = False
        self._owns_socket_path = True
        self._state_changed = anyio.Event()

    # -- lifecycle ---------------------------------------------------------------------------
    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        bridge.adopt_running_loop()
        # Everything COCOD_*/COCOINDEX_* configures applies; config.toml decides the
        # database and the state directory.
        settings = Settings.from_env()
        database = settings.database
        if self.config.database_url:
            database = DatabaseConnectionSpec(url=self.config.database_url)
            if settings.database is not None:
                database.user = settings.database.user
                database.password = settings.database.password
        context.init(settings.replace(database=database, state_dir=self.config.state_dir))
        try:
            ctx = context.get_context()
            pool = await ctx.pool()
            self.registry = RuntimeRegistry(pool, ctx.schema)
            await self.registry.ensure()
            inherited = take_inherited_socket()
            if inherited is not None:
                self._owns_socket_path = False
                listener = await SocketListener.from_socket(inherited)
                log.info("daemon.socket_activated", fd=inherited.fileno())
            else:
                listener = await open_listener(self.config.socket)
            async with anyio.create_task_group() as tg:
                self.instances.bind(tg)
                for instance_config in self.config.flows.values():
                    self.instances.add(instance_config, "config")
                for name, instance_config in (await self.registry.load()).items():
                    if name in self.instances.by_name:
                        log.warning("instance.shadowed", instance=name, by="config")
                        continue
                    self.instances.add(instance_config, "runtime")
                await tg.start(serve_control, listener, self.handlers.dispatch)
                tg.start_soon(self.instances.reap_idle)
                tg.start_soon(self._handle_signals)
                if (interval := watchdog_interval()) is not None:
                    tg.start_soon(self._watchdog, interval)
                await self._wait_catch_up_started()
                self._is_ready = True
                log.info(
                    "daemon.ready",
                    socket=str(self.config.socket),
                    instances=len(self.instances.by_name),
                )
                self.notifier.ready(self._status_line())
                task_status.started()
                await self._shutdown.wait()
                await self._drain()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()

    async def _wait_catch_up_started(self) -> None:
        """READY means every live instance got at least as far as its catch-up pass."""
        waiting = {State.STOPPED, State.STARTING}
        with anyio.move_on_after(READY_TIMEOUT_SECONDS):
            while any(
                i.config.live and i.state in waiting and i.scope is not None
                for i in self.instances.by_name.values()
            ):
                self._state_changed = anyio.Event()
                await self._state_changed.wait()

    async def _drain(self) -> None:
        self.is_draining = True
        self.notifier.stopping()
        log.info("daemon.draining")
        with anyio.move_on_after(self.config.drain_timeout) as scope:
            async with anyio.create_task_group() as tg:
                for instance in list(self.instances.by_name.values()):
                    tg.start_soon(self.instances.stop, instance)
        if scope.cancelled_caught:
            log.warning("daemon.drain_timeout", seconds=self.config.drain_timeout)

    async def _close(self) -> None:
        if self._owns_socket_path:
            with contextlib.suppress(OSError):
                self.config.socket.unlink(missing_ok=True)
        ctx = context.get_context()
        await ctx.aclose()
        await anyio.to_thread.run_sync(context.stop)
        bridge.release_loop()
        self.notifier.close()
        log.info("daemon.stopped")

    def request_shutdown(self) -> None:
        self._shutdown.set()

    # -- signals, reload, status -------------------------------------------------------------
    async def _handle_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    try:
                        await self.reload()
                    except Exception as e:
                        log.error("daemon.reload_failed", error=str(e))
                        self.notifier.status(f"reload failed: {e}")
                elif signum == signal.SIGINT and self.is_draining:
                    log.warning("daemon.forced_exit")
                    _force_exit()
                else:
                    self.request_shutdown()

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file; start added, stop removed, restart changed instances."""
        self.notifier.reloading()
        try:
            return await self._apply_reload()
        finally:
            self.notifier.ready(self._status_line())

    async def _apply_reload(self) -> dict[str, Any]:
        new = load_config(self.config.path)
        old_flows = self.config.flows
        added = [n for n in new.flows if n not in old_flows]
        removed = [n for n in old_flows if n not in new.flows]
        changed = [
            n
            for n in new.flows
            if n in old_flows and new.flows[n].identity() != old_flows[n].identity()
        ]
        for name in removed + changed:
            instance = self.instances.by_name.get(name)
            if instance is not None and instance.origin == "config":
                await self.instances.remove(instance)
        self.config.flows = new.flows
        self.instances.max_open = new.max_open_flows
        self.instances.idle_ttl = new.idle_ttl
        for name in added + changed:
            self._add_from_config(new.flows[name])
        log.info("daemon.reloaded", added=added, removed=removed, changed=changed)
        return {"added": added, "removed": removed, "changed": changed}

    def _add_from_config(self, instance_config: InstanceConfig) -> None:
        existing = self.instances.by_name.get(instance_config.name)
        if existing is not None:
            log.warning("instance.name_taken", instance=instance_config.name, by=existing.origin)
            return
        self.instances.add(instance_config, "config")

    def _status_line(self) -> str:
        states = [i.state for i in self.instances.by_name.values() if i.config.live]
        catching_up = sum(s in (State.STARTING, State.CATCHING_UP) for s in states)
        watching = sum(s == State.WATCHING for s in states)
        failed = sum(s in (State.FAILED, State.BACKOFF) for s in states)
        parts = []
        if catching_up:
            parts.append(f"catching up {catching_up} of {len(states)} flows")
        parts.append(f"watching {watching} flows")
        if failed:
            parts.append(f"{failed} failed")
        return ", ".join(parts)

    def _report_status(self) -> None:
        self._state_changed.set()
        if self._is_ready:
            self.notifier.status(self._status_line())

    async def _watchdog(self, interval: float) -> None:
        """Pinged from the event loop itself: a hung loop stops the pings."""
        while True:
            self.notifier.watchdog()
            await anyio.sleep(interval)


def _force_exit() -> None:
    """Second Ctrl+C: leave now, but release our hold on the embedded Postgres first so it
    is stopped rather than left running with a stale owner."""
    with contextlib.suppress(Exception):
        embedded = context.get_context()._embedded
        if embedded is not None:
            embedded.stop()
    os._exit(130)


def run_daemon(config_path: Path | None) -> int:
    config = load_config(config_path)
    daemon = Daemon(config)
    anyio.run(daemon.serve)
    return 0
