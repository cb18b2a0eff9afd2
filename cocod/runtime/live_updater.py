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
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import asyncpg
import structlog

from cocod import errors
from cocod.engine.indexer import UpdateMode
from cocod.engine.stats import IndexUpdateInfo, SourceUpdateStats
from cocod.errors import CocodError, DatabaseError, RowError, SourceError
from cocod.runtime.bridge import bridge
from cocod.runtime.context import LibraryContext, get_context
from cocod.runtime.coordination import Backoff
from cocod.runtime.execution import FlowExecution
from cocod.runtime.flow import Flow
from cocod.runtime.watcher import ChangeHints, watch_source
from cocod.storage.state import PostgresStateStore

log = structlog.get_logger(__name__)

DEFAULT_RESCAN_INTERVAL = datetime.timedelta(minutes=5)
ROW_RETRY_LIMIT = 4
"""Retries of a pass whose rows failed (0.5, 1, 2, 4 s); then the next rescan retries."""
STOP_TIMEOUT_SECONDS = 10.0


@dataclass
class FlowLiveUpdaterOptions:
    live_mode: bool = True
    reexport_targets: bool = False
    full_reprocess: bool = False
    print_stats: bool = False


@dataclass
class FlowUpdaterStatusUpdates:
    active_sources: list[str] = field(default_factory=list)
    updated_sources: list[str] = field(default_factory=list)


_CONNECTION_ERRORS = (
    OSError,  # refused, reset, no socket file, timed out
    asyncpg.PostgresConnectionError,  # class 08: connection lost or never made
    asyncpg.exceptions.OperatorInterventionError,  # 57P0x: shutting down, starting up
    asyncpg.InterfaceError,  # "connection is closed", "pool is closed"
)


def is_database_unavailable(exc: BaseException) -> bool:
    """Is this "the database cannot be reached now" (wait and retry), not a bug or a rule?

    ``errors.DatabaseUnavailableError`` says so directly; until every adapter raises it, a
    ``DatabaseError`` caused by a connection-level driver error, or such a driver error
    escaping untranslated, counts too. Source and row errors never do.
    """
    unavailable = getattr(errors, "DatabaseUnavailableError", None)
    if unavailable is not None and isinstance(exc, unavailable):
        return True
    if isinstance(exc, SourceError | RowError):
        return False
    if isinstance(exc, (errors.EmbeddedPostgresError, *_CONNECTION_ERRORS)):
        return True
    if isinstance(exc, DatabaseError):
        cause = exc.__cause__ or exc.__context__
        return cause is not None and is_database_unavailable(cause)
    return False


class _Status:
    """Per-source counters, readable from any thread; changes wake next_updates()."""

    def __init__(self, sources: Iterable[str]) -> None:
        self.totals = {name: SourceUpdateStats() for name in sources}
        self.update_counts = dict.fromkeys(self.totals, 0)
        self.reported_counts = dict.fromkeys(self.totals, 0)
        self.active = set(self.totals)
        self.version = 0
        self.reported_version = -1
        self._changed = anyio.Event()
        self.initial_pending = set(self.totals)
        self.caught_up = anyio.Event()
        if not self.initial_pending:
            self.caught_up.set()
        self.last_pass_at: float | None = None
        self.last_change_at: float | None = None
        self.last_error: str | None = None
        self.database_down = dict.fromkeys(self.totals, False)

    def _notify(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = anyio.Event()

    def initial_pass_done(self, source: str) -> None:
        self.initial_pending.discard(source)
        if not self.initial_pending:
            self.caught_up.set()

    def record(self, source: str, stats: SourceUpdateStats) -> None:
        self.totals[source].merge(stats)
        self.last_pass_at = time.time()
        if stats.has_changes:
            self.last_change_at = self.last_pass_at
            self.update_counts[source] += 1
            self._notify()

    def finish(self, source: str) -> None:
        self.active.discard(source)
        self._notify()

    async def next_updates(self) -> FlowUpdaterStatusUpdates:
        while self.version == self.reported_version:
            if not self.active:
                return FlowUpdaterStatusUpdates()
            await self._changed.wait()
        self.reported_version = self.version
        updated = [s for s, n in self.update_counts.items() if n != self.reported_counts[s]]
        self.reported_counts = dict(self.update_counts)
        return FlowUpdaterStatusUpdates(sorted(self.active), updated)


class _StoreHolder:
    """The state store shared by a flow's sources, reopened after setup or drop."""

    def __init__(self, ctx: LibraryContext, execution: FlowExecution) -> None:
        self.ctx = ctx
        self.execution = execution
        self._store: PostgresStateStore | None = None
        self._source_ids: dict[str, int] = {}
        self._generation = -1
        self._lock = anyio.Lock()

    async def get(self, source: str) -> tuple[PostgresStateStore, int]:
        async with self._lock:
            generation = self.execution.coordination.generation
            if self._store is None or generation != self._generation:
                # Setup or drop ran meanwhile: the old store may name a dropped flow.
                self._store, self._source_ids = await self.execution.open_store(self.ctx)
                self._generation = generation
            return self._store, self._source_ids[source]


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
        self._status: _Status | None = None
        self._loops: dict[str, _SourceLoop] = {}
        self._scope: anyio.CancelScope | None = None
        self._finished: anyio.Event | None = None
        self._error: BaseException | None = None

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
        status = self._status = _Status(execution.sources)
        holder = _StoreHolder(ctx, execution)
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
            name: _SourceLoop(holder, name, self._options, status) for name in execution.sources
        }
        try:
            async with anyio.create_task_group() as tg:
                for loop in self._loops.values():
                    await tg.start(loop.run)
                task_status.started()
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

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

    def _require_started(self) -> tuple[_Status, anyio.Event]:
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
        }

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


class _SourceLoop:
    """One source of a live updater: watcher, catch-up pass, then incremental passes."""

    def __init__(
        self, holder: _StoreHolder, name: str, options: FlowLiveUpdaterOptions, status: _Status
    ) -> None:
        execution = holder.execution
        self.holder = holder
        self.execution = execution
        self.name = name
        self.options = options
        self.status = status
        self.reader = execution.sources[name].reader
        source = execution.plan.sources[name].source
        self.watch = options.live_mode and self.reader.spec.watch_changes is not False
        self.refresh = source.refresh_interval or (DEFAULT_RESCAN_INTERVAL if self.watch else None)
        self.pending: set[str] = set()
        self.pending_dirs: set[str] = set()
        self.needs_full_pass = False
        self.wakeup = anyio.Event()
        self.retry_at: float | None = None
        self.backoff = Backoff(1.0, 30.0)
        self.row_backoff = Backoff(0.5, 8.0)
        self.failure: Exception | None = None
        self.passes = 0
        self.log = log.bind(flow=execution.full_name, source=name)

    @property
    def pending_count(self) -> int:
        return len(self.pending) + len(self.pending_dirs)

    def progress(self) -> dict[str, Any]:
        retry_at = self.retry_at
        retry_in = None if retry_at is None else round(max(0.0, retry_at - time.monotonic()), 1)
        return {
            "pending": self.pending_count,
            "passes": self.passes,
            "retry_in": retry_in,
            "database_down": self.status.database_down[self.name],
        }

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            async with anyio.create_task_group() as tg:
                if self.watch:
                    await tg.start(watch_source, self.reader, self._on_hints)
                task_status.started()
                mode = UpdateMode.from_flags(
                    full_reprocess=self.options.full_reprocess,
                    reexport=self.options.reexport_targets,
                )
                label = "batch update" if not self.options.live_mode else "initial"
                ok = await self._pass(mode, None, label)
                self.status.initial_pass_done(self.name)
                if not self.options.live_mode:
                    if not ok and self.failure is not None:
                        raise self.failure
                    tg.cancel_scope.cancel()
                    return
                if not self.watch and self.refresh is None:
                    tg.cancel_scope.cancel()
                    return
                if not ok:
                    self.needs_full_pass = True
                await self._serve_changes()
        finally:
            self.status.initial_pass_done(self.name)
            self.status.finish(self.name)

    # -- one pass ---------------------------------------------------------------------------
    async def _pass(self, mode: UpdateMode, keys: list[str] | None, label: str) -> bool:
        self.passes += 1
        try:
            store, source_id = await self.holder.get(self.name)
            stats = await self.execution.update_source(
                self.holder.ctx, store, self.name, source_id, mode, only_keys=keys
            )
        except Exception as e:
            if not (isinstance(e, CocodError) or is_database_unavailable(e)):
                raise
            self._failed(e, label)
            return False
        self._succeeded(stats, keys, label)
        return True

    def _failed(self, e: Exception, label: str) -> None:
        self.failure = e
        self.status.last_error = f"{self.name}: {e}"
        delay = self.backoff.next_delay()
        self.retry_at = time.monotonic() + delay
        retry_in = round(delay, 1)
        if not is_database_unavailable(e):
            self.log.error("source.pass_failed", error=str(e), kind=label, retry_in=retry_in)
        elif not self.status.database_down[self.name]:
            self.status.database_down[self.name] = True
            self.log.warning("source.database_down", error=str(e), retry_in=retry_in)
        else:
            self.log.info("source.retry_scheduled", kind=label, retry_in=retry_in)

    def _succeeded(self, stats: SourceUpdateStats, keys: list[str] | None, label: str) -> None:
        self.failure = None
        self.backoff.reset()
        if self.status.database_down[self.name]:
            self.status.database_down[self.name] = False
            self.log.info("source.database_back")
            # Commits are asynchronous (synchronous_commit=off): a server that crashed
            # may have lost the last ones it acknowledged, and the hints they consumed are
            # gone. One full pass (a stat walk) redoes whatever was lost.
            if keys is not None:
                self.needs_full_pass = True
        if stats.num_errors:
            self.status.last_error = f"{self.name}: {stats.num_errors} row(s) failed; see logs"
            self._retry_rows(stats, keys)
        else:
            self.row_backoff.reset()
            if keys is None:
                self.status.last_error = None
        self.status.record(self.name, stats)
        if self.options.print_stats and (keys is None or stats.has_changes):
            print(
                f"✅ {self.execution.full_name}.{self.name} ({label}): {stats.describe()}",
                file=sys.stdout,
                flush=True,
            )

    def _retry_rows(self, stats: SourceUpdateStats, keys: list[str] | None) -> None:
        """Rows failed (a commit, a read): try them again soon, a few times."""
        if not self.options.live_mode:
            return
        if self.row_backoff.failures >= ROW_RETRY_LIMIT:
            self.row_backoff.reset()
            self.log.warning("source.row_retries_exhausted", rows=stats.num_errors)
            return
        delay = self.row_backoff.next_delay()
        self.retry_at = time.monotonic() + delay
        # Unchanged keys cost an ordinal check; failed ones were not recorded as done.
        if keys is None:
            self.needs_full_pass = True
        else:
            self.pending.update(keys)
        self.log.info("source.row_retry_scheduled", rows=stats.num_errors, retry_in=round(delay, 1))

    # -- following changes ------------------------------------------------------------------
    async def _serve_changes(self) -> None:
        """Process hinted keys as they come; rescan periodically; back off after failures."""
        refresh = self.refresh.total_seconds() if self.refresh else None
        next_rescan = time.monotonic() + refresh if refresh else math.inf
        while True:
            now = time.monotonic()
            if self.retry_at is not None and now < self.retry_at:
                # Backing off: hints keep accumulating; only the root coming back (a
                # rescan hint, at most one per root poll) ends the wait early.
                self.wakeup = anyio.Event()
                with anyio.move_on_after(self.retry_at - now):
                    await self.wakeup.wait()
                continue
            self.retry_at = None
            if self.needs_full_pass or now >= next_rescan:
                self.needs_full_pass = False
                covered = self.pending, self.pending_dirs  # the full pass covers them
                self.pending, self.pending_dirs = set(), set()
                if not await self._pass(UpdateMode.NORMAL, None, "interval update"):
                    self.needs_full_pass = True
                    self.pending |= covered[0]
                    self.pending_dirs |= covered[1]
                next_rescan = time.monotonic() + refresh if refresh else math.inf
                continue
            if self.pending_dirs:
                dirs = sorted(self.pending_dirs)
                self.pending_dirs.clear()
                try:
                    listed = await self.reader.list_rows_under(dirs)
                except CocodError as e:
                    self.pending_dirs.update(dirs)
                    self.needs_full_pass = True
                    self._failed(e, "list")
                    continue
                # The folder keys themselves too: the engine expands them to the tracked
                # files under them, so files gone from a re-created folder are deleted.
                self.pending.update(dirs)
                self.pending.update(listed)
            if self.pending:
                keys = sorted(self.pending)
                self.pending.clear()
                if not await self._pass(UpdateMode.NORMAL, keys, "change"):
                    self.pending.update(keys)  # kept for the retry, never lost
                    if self.failure is not None and not is_database_unavailable(self.failure):
                        self.needs_full_pass = True
                continue
            self.wakeup = anyio.Event()
            with anyio.move_on_after(max(0.0, next_rescan - time.monotonic())):
                await self.wakeup.wait()

    def _on_hints(self, hints: ChangeHints) -> None:
        self.pending.update(hints.keys)
        self.pending_dirs.update(hints.dirs)
        if hints.rescan:
            self.needs_full_pass = True
            self.retry_at = None  # the root is back (or watched again): try now
            self.wakeup.set()
        elif self.retry_at is None:
            self.wakeup.set()
