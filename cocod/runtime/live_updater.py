"""FlowLiveUpdater: a catch-up pass, then file-system events and periodic rescans.

The updater is a service: ``await task_group.start(updater.serve)`` returns once every
source's watcher is registered (so no edit made during the catch-up pass is lost), and
the updater runs until its scope is cancelled (batch mode: until the pass is done). The v0
API (``start``/``wait``/``abort``, context managers) runs the same ``serve`` in a task
group owned by the bridge.

Events are only hints (see :mod:`cocod.runtime.watcher`): coalesced per key here, and each
key re-checked by the engine (ordinal, then content fingerprint). A periodic rescan
repairs anything a watcher missed; a vanished source root is reported, its rows are kept.

Nothing here can spin: every failed pass waits its :class:`Backoff` delay (1 s doubling to
30 s, with jitter) and keeps its hints for the next try. A database that cannot be reached
shows as ``snapshot()["database_down"]`` until a pass succeeds again, with one log line
when it goes down, one per retry, and one when it is back. Rows whose commit failed are
retried after a short backoff rather than at the next rescan.

One lease for the whole run (:class:`~cocod.runtime.leasing.LeaseKeeper`): the updater
takes the flow's lease once, beside its watchers, and every pass writes under it (fenced by
its epoch, as every write is), so another process's ``Flow.update()`` waits, naming this
one, until the updater stops. Passes wait behind the same gate as a pause until the lease
is held; when it is lost, the gate closes at once (the running pass is cancelled, its
hints kept), and the keeper retakes the lease with backoff and opens the gate again. In
batch mode (``live_mode=False``) the keeper gives up after a few tries, or when another
process took the lease meanwhile, and its typed error (``DatabaseUnavailableError``,
``LeaseLostError``) ends the run and comes out of ``wait()``: a caller waiting for one pass
must not wait for a whole outage. Run by a daemon that owns the flow, the updater uses the
owner's lease instead.

``pause()`` stops passes (the running one is cancelled; rows it committed stay) while the
watchers keep collecting hints; ``resume()`` catches up from them. ``report_progress_to``
names the :class:`~cocod.engine.progress.ProgressSink` its passes report to.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import structlog

from cocod.engine.progress import ProgressSink
from cocod.engine.stats import IndexUpdateInfo, PassCounters, SourceUpdateStats
from cocod.runtime.bridge import bridge
from cocod.runtime.context import get_context
from cocod.runtime.flow import Flow
from cocod.runtime.leasing import LeaseKeeper
from cocod.runtime.pause_gate import PauseGate
from cocod.runtime.source_loop import SourceLoop, StoreHolder
from cocod.runtime.updater_status import (
    FlowLiveUpdaterOptions,
    FlowUpdaterStatusUpdates,
    UpdaterStatus,
    is_database_unavailable,
)

__all__ = [
    "FlowLiveUpdater",
    "FlowLiveUpdaterOptions",
    "FlowUpdaterStatusUpdates",
    "is_database_unavailable",
]

log = structlog.get_logger(__name__)

STOP_TIMEOUT_SECONDS = 10.0


class _ReadyFlag(anyio.abc.TaskStatus[None]):
    """Forwards ``started()`` and remembers it was called."""

    def __init__(self, inner: anyio.abc.TaskStatus[None]) -> None:
        self.inner = inner
        self.is_set = False

    def started(self, value: None = None) -> None:
        self.is_set = True
        self.inner.started()


class FlowLiveUpdater:
    """Keeps one flow's targets up to date: ``serve()``, and v0's start/wait/abort."""

    def __init__(self, fl: Flow, options: FlowLiveUpdaterOptions | None = None) -> None:
        self._flow = fl
        self._options = options or FlowLiveUpdaterOptions()
        self._status: UpdaterStatus | None = None
        self._loops: dict[str, SourceLoop] = {}
        self._scope: anyio.CancelScope | None = None
        self._finished: anyio.Event | None = None
        self._error: BaseException | None = None
        self._gate = PauseGate()
        """Closed while paused by the user or while the lease is not held."""
        self._is_user_paused = False
        self._is_lease_missing = False
        self._keeper: LeaseKeeper | None = None
        self._progress_sink: ProgressSink | None = None

    # -- the service ------------------------------------------------------------------------
    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the store, register every source's watcher, report ready, then run the
        catch-up pass and (live mode) serve changes until cancelled; in batch mode return
        when done. Raises the first source-level fatal error (row errors are counted)."""
        if not bridge.is_loop_thread():
            await self._serve_from_another_loop(task_status)
            return
        if self._finished is not None:
            raise RuntimeError("this FlowLiveUpdater was already started; create a new one")
        self._finished = anyio.Event()
        self._scope = anyio.CancelScope()
        try:
            with self._scope:
                await self._serve(task_status)
        except BaseException as e:
            if not isinstance(e, anyio.get_cancelled_exc_class()):
                self._error = e
            raise
        finally:
            self._finished.set()

    async def _serve(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        ctx = get_context()
        execution = await self._flow.execution_async()
        status = self._status = UpdaterStatus(execution.sources)
        holder = StoreHolder(ctx, execution)
        try:
            await holder.get(next(iter(execution.sources)))
        except StopIteration:
            pass
        except Exception as e:
            # Setup out of date is fatal now; an unreachable database is waited for.
            if not (self._options.live_mode and is_database_unavailable(e)):
                raise
            log.warning("source.database_down", flow=execution.full_name, error=str(e))
            status.database_down = dict.fromkeys(status.database_down, True)
            status.last_error = str(e)
        self._loops = {
            name: SourceLoop(holder, name, self._options, status, self._gate, self._progress_sink)
            for name in execution.sources
        }
        keeper = None
        if execution.coordination.held_lease is None:  # no owner (daemon) holds it for us
            keeper = self._keeper = LeaseKeeper(
                ctx,
                execution.full_name,
                self._on_lease_held,
                self._on_lease_take_failed,
                batch=not self._options.live_mode,  # bounded: its caller waits for it
            )
            self._on_lease_held(False)  # no pass before the lease is held
        try:
            async with anyio.create_task_group() as tg:
                if keeper is not None:
                    tg.start_soon(keeper.run)
                async with anyio.create_task_group() as loops:
                    for loop in self._loops.values():
                        await loops.start(loop.run)
                    task_status.started()
                tg.cancel_scope.cancel()  # every loop ended (batch mode): give the lease back
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    def _on_lease_held(self, is_held: bool) -> None:
        self._is_lease_missing = not is_held
        self._sync_gate()

    def _on_lease_take_failed(self, error: Exception) -> None:
        """No pass runs to report an unreachable database while there is no lease: say
        it here (the first pass that succeeds again clears it, and runs a full pass)."""
        status = self._status
        if status is not None and is_database_unavailable(error):
            status.database_down = dict.fromkeys(status.database_down, True)
            status.last_error = str(error)

    def _set_user_paused(self, is_paused: bool) -> None:
        self._is_user_paused = is_paused
        self._sync_gate()

    def _sync_gate(self) -> None:
        if self._is_user_paused or self._is_lease_missing:
            self._gate.pause()
        else:
            self._gate.resume()

    async def _serve_from_another_loop(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        """``serve`` awaited on a loop that is not the library's: host it there, follow it."""
        await self.start_async()
        task_status.started()
        try:
            await self.wait_async()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_TIMEOUT_SECONDS):
                self.abort()
                try:
                    await self.wait_async()
                except Exception as e:
                    log.debug("live_updater.ended", error=str(e))

    async def _serve_hosted(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """``serve`` in the bridge's task group: errors after ready go to wait(), not the host."""
        ready = _ReadyFlag(task_status)
        try:
            await self.serve(task_status=ready)
        except Exception:
            if not ready.is_set:
                raise

    # -- v0 lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        bridge.run(bridge.start_service(self._serve_hosted))

    async def start_async(self) -> None:
        await bridge.run_async(bridge.start_service(self._serve_hosted))

    def _require_started(self) -> tuple[UpdaterStatus, anyio.Event]:
        if self._status is None or self._finished is None:
            raise RuntimeError("Live updater is not started")
        return self._status, self._finished

    async def _wait(self) -> None:
        _, finished = self._require_started()
        await finished.wait()
        if self._error is not None:
            raise self._error

    def wait(self) -> None:
        bridge.run(self._wait())

    async def wait_async(self) -> None:
        await bridge.run_async(self._wait())

    def abort(self) -> None:
        """Stop the updater (from any thread); ``wait()`` then returns."""
        self._require_started()
        scope = self._scope
        assert scope is not None
        bridge.call_soon(scope.cancel)

    # -- pausing, progress, counters ---------------------------------------------------------
    @property
    def is_paused(self) -> bool:
        return self._is_user_paused

    def pause(self) -> None:
        """Run no pass until :meth:`resume` (any thread; also before the updater starts:
        then its catch-up pass waits). The watchers keep collecting change hints."""
        bridge.call_soon(lambda: self._set_user_paused(True))

    def resume(self) -> None:
        """Catch up from the hints collected while paused (any thread)."""
        bridge.call_soon(lambda: self._set_user_paused(False))

    def lease_epochs(self) -> tuple[int, int | None]:
        """(how many times this updater took the flow's lease, the epoch it holds now);
        (0, None) when an owner's lease is used or none is held yet."""
        keeper = self._keeper
        if keeper is None:
            return 0, None
        lease = keeper.lease
        return keeper.acquisitions, lease.epoch if lease is not None and lease.is_held else None

    def report_progress_to(self, sink: ProgressSink | None) -> None:
        """Where this updater's passes report progress; set before it starts. Without
        one, passes report to the sink of the context ``serve`` runs in, if any."""
        self._progress_sink = sink

    def counters(self) -> PassCounters:
        """Watcher events, rescans, errors by kind and pass durations since it started."""
        total = PassCounters()
        for loop in list(self._loops.values()):
            total.merge(loop.counters)
        return total

    def next_status_updates(self) -> FlowUpdaterStatusUpdates:
        status, _ = self._require_started()
        return bridge.run(status.next_updates())

    async def next_status_updates_async(self) -> FlowUpdaterStatusUpdates:
        status, _ = self._require_started()
        return await bridge.run_async(status.next_updates())

    async def wait_caught_up_async(self) -> None:
        """Until every source finished its initial (catch-up) pass, failed or not."""
        status, finished = self._require_started()

        async def wait() -> None:
            async with anyio.create_task_group() as tg:

                async def until(event: anyio.Event) -> None:
                    await event.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(until, status.caught_up)
                tg.start_soon(until, finished)
            if finished.is_set() and self._error is not None:
                raise self._error

        await bridge.run_async(wait())

    def snapshot(self) -> dict[str, Any]:
        """What ``cocod status`` shows, from memory (any thread, never waits)."""
        status = self._status
        if status is None:
            return {
                "caught_up": False,
                "last_pass_at": None,
                "last_change_at": None,
                "last_error": None,
                "pending_changes": 0,
                "stats": {},
                "database_down": False,
                "progress": {},
                "paused": self._is_user_paused,
            }
        loops = dict(self._loops)
        return {
            "caught_up": status.caught_up.is_set(),
            "last_pass_at": status.last_pass_at,
            "last_change_at": status.last_change_at,
            "last_error": status.last_error,
            "pending_changes": sum(loop.pending_count for loop in loops.values()),
            "stats": self.update_stats().stats,
            "database_down": any(status.database_down.values()),
            "progress": {name: loop.progress() for name, loop in loops.items()},
            "paused": self._is_user_paused,
            "waiting_for_lease": self._waiting_for_lease(),
        }

    def _waiting_for_lease(self) -> str | None:
        """Who holds the flow's lease while this updater waits for it."""
        keeper = self._keeper
        if keeper is None or not self._is_lease_missing or keeper.waiting_for is None:
            return None
        return keeper.waiting_for.describe()

    def update_stats(self) -> IndexUpdateInfo:
        status, _ = self._require_started()
        return IndexUpdateInfo({k: _copy(v) for k, v in status.totals.items()})

    def __enter__(self) -> FlowLiveUpdater:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()
        self.wait()

    async def __aenter__(self) -> FlowLiveUpdater:
        await self.start_async()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.abort()
        await self.wait_async()


def _copy(stats: SourceUpdateStats) -> SourceUpdateStats:
    copy = SourceUpdateStats()
    copy.merge(stats)
    return copy


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """A source's own error rather than the group anyio wraps it in."""
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
        leaf = leaf.exceptions[0]
    return leaf
