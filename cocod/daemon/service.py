"""The daemon's composition root: signals, database, registry, instances, control socket.

Start-up is one task group whose order is explicit: the signal receiver opens first
(before any start-up work, so a SIGTERM or SIGHUP at any moment is handled), then
settings → database (the embedded server starts in a worker thread) → registry →
instances (each live one starts its watcher and catch-up) → control socket → the database
supervisor and the monitor → READY. A SIGTERM during start-up cancels it and exits 0.

Shutdown is bounded: ``drain_timeout`` is the whole budget from SIGTERM to exit. Commands
other than ping/ls/status are refused, every updater is cancelled (a commit in flight
completes or rolls back; rows not yet committed are redone by the next catch-up), the pool
is closed with what is left of the budget and then terminated (which also unsticks a
transaction waiting on someone else's lock), and the embedded Postgres is stopped last. A
second SIGINT exits at once. SIGHUP re-reads config.toml and applies the difference
without touching unchanged instances (:mod:`cocod.daemon.reload`).

The daemon also has the operations the control handlers call — :meth:`Daemon.pause`,
:meth:`Daemon.resume` (persisted in the registry, so a paused instance stays paused after
a restart) and :meth:`Daemon.add_builtin` — from :mod:`cocod.daemon.operations`. With
``[daemon] metrics`` set, the metrics server (:mod:`cocod.daemon.metrics`) starts with
the control socket.

Every daemon is a member of its database's cluster (:mod:`cocod.daemon.membership`): it
registers and heartbeats in ``cocod.daemons`` from before its instances start, so its
first fair share already counts the daemons that are up; instances added or removed on
another daemon are picked up from the registry (a notification, and every heartbeat). A
drain releases every lease as its instance stops, then deregisters, so the other daemons
take over at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import SocketListener, TaskGroup, TaskStatus

from cocod.daemon import early_signals
from cocod.daemon.activation import take_inherited_socket
from cocod.daemon.config import DaemonConfig, load_config
from cocod.daemon.cpu_budget import apply_embed_threads
from cocod.daemon.database import DatabaseState, DatabaseWatch, retry_delay
from cocod.daemon.handlers import Handlers
from cocod.daemon.instances import Instances, State
from cocod.daemon.membership import Membership
from cocod.daemon.metrics import MetricsServer
from cocod.daemon.monitor import Monitor
from cocod.daemon.notify import Notifier, watchdog_interval
from cocod.daemon.operations import InstanceOperations
from cocod.daemon.registry import RuntimeRegistry
from cocod.daemon.reload import apply_reload
from cocod.daemon.restart_check import verify_after_restart
from cocod.daemon.server import open_listener, serve_control
from cocod.errors import DatabaseUnavailableError
from cocod.runtime import context
from cocod.runtime.bridge import bridge
from cocod.setting import DatabaseConnectionSpec, Settings

log = structlog.get_logger(__name__)

READY_TIMEOUT_SECONDS = 30.0
"""READY is sent at the latest this long after start, even if an instance is slow."""
OVERRUN_GRACE_SECONDS = 1.5
"""Past ``drain_timeout`` by this much, the process leaves without waiting any longer."""


class Daemon(InstanceOperations):
    def __init__(self, config: DaemonConfig, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.instances = Instances(
            config.base_dir, config.max_open_flows, config.idle_ttl, config.embed_threads
        )
        self.instances.on_state_change = self._report_status
        self.database = DatabaseWatch(
            self._database_answers, self._ensure_database_running, self._database_changed
        )
        self.instances.on_database_unavailable = self.database.report_down
        self.instances.wait_database_up = self.database.wait_up
        self.handlers = Handlers(self)
        self.registry: RuntimeRegistry
        self.is_draining = False
        self.early_signals: list[int] = []
        """Signals caught by :func:`run_daemon` before the event loop was running."""
        self._shutdown = anyio.Event()
        self._is_ready = False
        self._reload_requested = False
        self._owns_socket_path = True
        self._startup_scope: anyio.CancelScope | None = None
        self._is_socket_bound = False
        self._deadline: float | None = None  # anyio clock: when shutdown must be over
        self._overrun: threading.Timer | None = None
        self._tg: TaskGroup | None = None
        self._instances_changed = anyio.Event()
        self.metrics = MetricsServer(self, config.metrics) if config.metrics else None
        self.membership = Membership(self)

    @property
    def is_ready(self) -> bool:
        return self._is_ready

    # -- lifecycle ---------------------------------------------------------------------------
    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # Cancelled by a SIGTERM/SIGINT that arrives before start-up is over, even one
        # caught before the loop ran (a scope cancelled before it is entered is cancelled
        # as it is entered).
        self._startup_scope = startup = anyio.CancelScope()
        async with bridge.adopted_loop(), anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self._handle_signals)
            try:
                with startup:
                    await self._start_up(tg)
                self._startup_scope = None
                if not self._shutdown.is_set():
                    self._is_ready = True
                    log.info(
                        "daemon.ready",
                        socket=str(self.config.socket),
                        instances=len(self.instances.by_name),
                    )
                    self.notifier.ready(self._status_line())
                    task_status.started()
                    if self._reload_requested:
                        await self._reload_from_signal()
                    await self._shutdown.wait()
                else:
                    log.info("daemon.startup_cancelled")
                await self._drain()
            finally:
                with anyio.move_on_after(self._budget_left(), shield=True):
                    await self._close()
                tg.cancel_scope.cancel()

    async def _start_up(self, tg: TaskGroup) -> None:
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
        apply_embed_threads(self.config.embed_threads)  # before any flow can load a model
        self.registry = await self._open_registry()
        self.instances.paused_names = await self.registry.load_paused()
        self.instances.bind(tg)
        await self.membership.join(tg)
        for instance_config in self.config.flows.values():
            self.instances.add(instance_config, "config")
        for name, instance_config in (await self.registry.load()).items():
            if name in self.instances.by_name:
                log.warning("instance.shadowed", instance=name, by="config")
                continue
            self.instances.add(instance_config, "runtime")
        inherited = take_inherited_socket()
        if inherited is not None:
            self._owns_socket_path = False
            listener = await SocketListener.from_socket(inherited)
            log.info("daemon.socket_activated", fd=inherited.fileno())
        else:
            listener = await open_listener(self.config.socket)
            self._is_socket_bound = True
        await tg.start(serve_control, listener, self.handlers.dispatch)
        if self.metrics is not None:
            await tg.start(self.metrics.serve)
        await tg.start(self.database.serve)
        await tg.start(Monitor(self.instances, self.database).serve)
        await tg.start(self.instances.reap_idle)
        if (interval := watchdog_interval()) is not None:
            await tg.start(self._watchdog, interval)
        await self._wait_instances_started()

    async def _open_registry(self) -> RuntimeRegistry:
        """Start or reach the database, then the registry; a database that is not up yet
        (Postgres starting after us at boot) is waited for with backoff, not fatal."""
        ctx = context.get_context()
        failures = 0
        while True:
            try:
                await ctx.open_database()  # the embedded server starts in a worker thread
                registry = RuntimeRegistry(await ctx.pool(), ctx.schema)
                await registry.ensure()
                return registry
            except DatabaseUnavailableError as e:
                failures += 1
                delay = retry_delay(failures)
                log.warning("daemon.database_waiting", error=str(e), retry_in=round(delay, 2))
                self.notifier.status(f"waiting for the database: {e}")
                await anyio.sleep(delay)

    async def _wait_instances_started(self) -> None:
        """READY: every live instance's watcher is registered and its catch-up has begun
        (or its attempt failed); at most READY_TIMEOUT_SECONDS, so one slow instance
        does not hold back the others' service."""
        with anyio.move_on_after(READY_TIMEOUT_SECONDS):
            for instance in list(self.instances.by_name.values()):
                if instance.config.live and instance.scope is not None:
                    await instance.started.wait()

    def _budget_left(self) -> float:
        if self._deadline is None:
            self._deadline = anyio.current_time() + self.config.drain_timeout
        return max(self._deadline - anyio.current_time(), 0.0)

    async def _drain(self) -> None:
        self.is_draining = True
        self.notifier.stopping()
        log.info("daemon.draining", budget_s=round(self._budget_left(), 2))
        # Keep a share of the budget for closing the pool and stopping the server.
        reserve = min(3.0, self.config.drain_timeout * 0.3)
        with anyio.move_on_after(max(self._budget_left() - reserve, 0.0)) as scope:
            async with anyio.create_task_group() as tg:
                for instance in list(self.instances.by_name.values()):
                    tg.start_soon(self.instances.stop, instance)
        if scope.cancelled_caught:
            log.warning("daemon.drain_timeout", seconds=self.config.drain_timeout)
        # Every lease is released (its instance stopped): now leave the cluster, while the
        # pool still works (the member deletes its row on its way out, within a deadline).
        await self.membership.leave(self._budget_left())

    async def _close(self) -> None:
        """Release everything; each step gets what is left of the budget."""
        if self._owns_socket_path and self._is_socket_bound:
            with contextlib.suppress(OSError):
                self.config.socket.unlink(missing_ok=True)
        try:
            ctx = context.get_context()
            # Half of what is left for a polite pool close; terminating it is immediate.
            await ctx.aclose(timeout=self._budget_left() / 2)
            with anyio.move_on_after(self._budget_left()) as scope:
                # The embedded server's fast shutdown; abandoned past the budget.
                await anyio.to_thread.run_sync(context.stop, abandon_on_cancel=True)
            if scope.cancelled_caught:
                log.warning("daemon.embedded_stop_timeout")
        except Exception as e:  # an exit path (perhaps after a failed start): go on
            log.warning("daemon.close_failed", error=f"{type(e).__name__}: {e}")
        self.notifier.close()
        log.info("daemon.stopped")

    def request_shutdown(self) -> None:
        """Start the shutdown budget now; a start-up in progress is cancelled."""
        if self._shutdown.is_set():
            return
        self._deadline = anyio.current_time() + self.config.drain_timeout
        self._overrun = threading.Timer(
            self.config.drain_timeout + OVERRUN_GRACE_SECONDS, _exit_after_overrun
        )
        self._overrun.daemon = True
        self._overrun.start()
        self._shutdown.set()
        if self._startup_scope is not None:
            self._startup_scope.cancel()

    def cancel_overrun_timer(self) -> None:
        if self._overrun is not None:
            self._overrun.cancel()

    # -- signals, reload, status -------------------------------------------------------------
    async def _handle_signals(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            with anyio.open_signal_receiver(*early_signals.SIGNALS) as signals:
                task_status.started()
                for signum in self.early_signals:
                    await self._on_signal(signum)
                self.early_signals.clear()
                async for signum in signals:
                    await self._on_signal(signum)
        finally:
            # Cancelled when the drain begins: from here until exit, a repeated SIGTERM
            # (systemd, the harness) must not kill the drain half-way.
            early_signals.hold_while_draining(lambda: _force_exit(130))

    async def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            if self._is_ready and not self.is_draining:
                await self._reload_from_signal()
            else:
                log.info("daemon.reload_deferred", reason="starting or stopping")
                self._reload_requested = True
        elif signum == signal.SIGINT and self._shutdown.is_set():
            log.warning("daemon.forced_exit")
            _force_exit(130)
        else:
            log.info("daemon.signal", signal=signal.Signals(signum).name)
            self.request_shutdown()

    async def _reload_from_signal(self) -> None:
        self._reload_requested = False
        try:
            await self.reload()
        except Exception as e:
            log.error("daemon.reload_failed", error=str(e))
            self.notifier.status(f"reload failed: {e}")

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file; start added, stop removed, restart changed instances."""
        self.notifier.reloading()
        try:
            return await apply_reload(self)
        finally:
            self.notifier.ready(self._status_line())

    async def _database_answers(self) -> str | None:
        """None when a pooled connection answers ``SELECT 1``, else what failed."""
        try:
            pool = await context.get_context().pool()
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        except Exception as e:  # a probe: whatever fails means "not answering"
            return f"{type(e).__name__}: {e}"
        return None

    async def _ensure_database_running(self) -> bool:
        return await context.get_context().ensure_database_running()

    def _database_changed(self, state: DatabaseState) -> None:
        self.instances.set_database_down(state is not DatabaseState.UP)
        self._report_status()
        if state is DatabaseState.UP and self._tg is not None and not self.is_draining:
            # A restarted server may have lost what it had not flushed (commits are
            # asynchronous) or have been changed while we could not see it: check each
            # live instance against its files and repair what drifted.
            self._tg.start_soon(verify_after_restart, self)

    async def wait_instances_settled(self, states: set[State]) -> None:
        """Until no instance is in one of ``states`` (woken by each state change)."""
        while any(i.state in states for i in self.instances.by_name.values()):
            self._instances_changed = anyio.Event()
            await self._instances_changed.wait()

    def _status_line(self) -> str:
        states = [i.state for i in self.instances.by_name.values() if i.config.live]
        catching_up = sum(s in (State.STARTING, State.CATCHING_UP) for s in states)
        watching = sum(s == State.WATCHING for s in states)
        failed = sum(s in (State.FAILED, State.BACKOFF) for s in states)
        paused = sum(s == State.PAUSED for s in states)
        parts = []
        if not self.database.is_up:
            parts.append(f"database {self.database.state}")
        if catching_up:
            parts.append(f"catching up {catching_up} of {len(states)} flows")
        parts.append(f"watching {watching} flows")
        if paused:
            parts.append(f"{paused} paused")
        if failed:
            parts.append(f"{failed} failed")
        return ", ".join(parts)

    def _report_status(self) -> None:
        self._instances_changed.set()
        if self._is_ready:
            self.notifier.status(self._status_line())

    async def _watchdog(
        self, interval: float, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Pinged from the event loop itself: a hung loop stops the pings."""
        task_status.started()
        while True:
            self.notifier.watchdog()
            await anyio.sleep(interval)


def _force_exit(code: int) -> None:
    """Leave now, but release our hold on the embedded Postgres first so it is stopped
    rather than left running with a stale owner."""
    with contextlib.suppress(Exception):
        context.get_context().release_embedded_now()
    os._exit(code)


def _exit_after_overrun() -> None:
    """The shutdown budget is spent and something still waits: do not wait for SIGKILL."""
    log.error("daemon.shutdown_overrun", grace_s=OVERRUN_GRACE_SECONDS)
    _force_exit(1)


def run_daemon(config_path: Path | None) -> int:
    # Until the event loop's signal receiver opens, remember signals instead of dying of
    # them (the default action): the daemon handles them as soon as it can. The entry
    # point may have called hold() already, before importing this module.
    early_signals.hold()
    log.info("daemon.starting", pid=os.getpid(), at=time.time())
    exit_code = 1
    try:
        config = load_config(config_path)
        daemon = Daemon(config)
        daemon.early_signals = early_signals.caught()
        if signal.SIGTERM in daemon.early_signals or signal.SIGINT in daemon.early_signals:
            log.info("daemon.startup_cancelled")
            exit_code = 0
            return 0
        try:
            anyio.run(daemon.serve)
        except BaseExceptionGroup as group:
            raise _leaf(group) from None
        finally:
            daemon.cancel_overrun_timer()
        exit_code = 0
    finally:
        early_signals.exit_at_once_on_signal(exit_code)
    return 0


def _leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
