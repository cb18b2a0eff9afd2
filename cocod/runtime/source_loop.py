"""One source of a live updater: its watcher, its catch-up pass, then incremental passes.

The loop owns the source's pending hints (keys and folders, coalesced), and decides what
runs next: a hint pass, a folder listing, a full rescan, or nothing until the next hint,
rescan or retry. Every failed pass waits its :class:`~cocod.runtime.coordination.Backoff`
delay and keeps its hints, so nothing spins and nothing is lost; a database that cannot be
reached is shown through the shared :class:`UpdaterStatus` until a pass succeeds again.

While the updater's :class:`~cocod.runtime.pause_gate.PauseGate` is paused, the watcher
keeps adding hints and no pass starts; a pass the pause interrupts gives its keys back (a
full pass is owed again), so resuming catches up from the hints, and an updater started
paused runs its catch-up pass on resume. Each pass reports its progress to the sink given
(:mod:`cocod.engine.progress`), or to whatever sink the caller's context set.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from typing import Any

import anyio
import anyio.abc
import structlog

from cocod.engine.indexer import UpdateMode
from cocod.engine.progress import PassProgress, ProgressSink, current_sink, reporting_to
from cocod.engine.stats import PassCounters, SourceUpdateStats
from cocod.errors import CocodError, SourceError
from cocod.runtime.context import LibraryContext
from cocod.runtime.coordination import Backoff
from cocod.runtime.execution import FlowExecution
from cocod.runtime.pause_gate import PauseGate
from cocod.runtime.updater_status import (
    FlowLiveUpdaterOptions,
    UpdaterStatus,
    is_database_unavailable,
)
from cocod.runtime.watcher import ChangeHints, watch_source
from cocod.storage.state import PostgresStateStore

log = structlog.get_logger(__name__)

DEFAULT_RESCAN_INTERVAL = datetime.timedelta(minutes=5)
MAX_HINTED_KEYS = 4096
"""More pending keys than this run one full pass instead of a hint pass: a hinted key's
lookup costs about six times a full pass's per-row cost (bench/hint_lookup_bench.py)."""
ROW_RETRY_LIMIT = 4
"""Retries of a pass whose rows failed (0.5, 1, 2, 4 s); then the next rescan retries."""


class StoreHolder:
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


class _EndingSink:
    """Forwards a pass's progress and, once the pass is over however it ended (failed,
    paused, cancelled), reports it finished: a status line or a progress bar must not
    show "catching up" for a pass that no longer runs."""

    def __init__(self, inner: ProgressSink) -> None:
        self.inner = inner
        self.last: PassProgress | None = None

    def on_progress(self, progress: PassProgress) -> None:
        self.last = progress
        self.inner.on_progress(progress)

    def end(self) -> None:
        if self.last is not None and not self.last.finished:
            self.last.finished = True
            self.inner.on_progress(self.last)


class SourceLoop:
    """One source of a live updater: watcher, catch-up pass, then incremental passes."""

    def __init__(
        self,
        holder: StoreHolder,
        name: str,
        options: FlowLiveUpdaterOptions,
        status: UpdaterStatus,
        gate: PauseGate | None = None,
        progress_sink: ProgressSink | None = None,
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
        self.in_flight = 0  # hinted keys and folders the running pass is processing
        self.gate = gate or PauseGate()
        self.progress_sink = progress_sink
        self.counters = PassCounters()
        self.log = log.bind(flow=execution.full_name, source=name)

    @property
    def pending_count(self) -> int:
        """Changes not yet committed: those waiting, and those the running pass took."""
        return len(self.pending) + len(self.pending_dirs) + self.in_flight

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
                ok: bool | None = None
                while ok is None:  # a pause interrupts it: run it again on resume
                    await self.gate.wait_open()
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
                tg.start_soon(self._prepare_functions)
                await self._serve_changes()
        finally:
            self.status.initial_pass_done(self.name)
            self.status.finish(self.name)

    async def _prepare_functions(self) -> None:
        """Create and warm this source's executors (load the embedding model) once the
        catch-up pass is done: edits will come, and the first one's pass should not pay
        for the load (tens of seconds on a busy machine). Batch updates never get here,
        so an unchanged one-shot update still loads no model."""
        for runner in self.execution.sources[self.name].runners.values():
            try:
                await runner.prepare()
            except Exception as e:  # the rows that need it fail with the same error
                self.log.warning(
                    "source.prepare_failed", function=runner.function.kind, error=str(e)
                )

    # -- one pass ---------------------------------------------------------------------------
    async def _pass(self, mode: UpdateMode, keys: list[str] | None, label: str) -> bool | None:
        """True when the pass succeeded, False when it failed (backoff is scheduled),
        None when a pause interrupted it (the caller gives its work back)."""
        self.passes += 1
        started = time.monotonic()
        inner = self.progress_sink or current_sink()
        sink = None if inner is None else _EndingSink(inner)
        with self.gate.interruptible() as scope:
            try:
                with reporting_to(sink):
                    store, source_id = await self.holder.get(self.name)
                    stats = await self.execution.update_source(
                        self.holder.ctx, store, self.name, source_id, mode, only_keys=keys
                    )
            except Exception as e:
                if scope.cancel_called:
                    pass  # the pause's cancellation, translated on its way out: not a failure
                elif not (isinstance(e, CocodError) or is_database_unavailable(e)):
                    raise
                else:
                    self._failed(e, label)
                    return False
            finally:
                if sink is not None:
                    sink.end()
        if scope.cancel_called:
            self.log.info("source.pass_paused", kind=label)
            return None
        self.counters.count_pass(stats, time.monotonic() - started)
        self._succeeded(stats, keys, label)
        return True

    def _failed(self, e: Exception, label: str) -> None:
        self.failure = e
        kind = (
            "database"
            if is_database_unavailable(e)
            else "source"
            if isinstance(e, SourceError)
            else "pass"
        )
        self.counters.count_error(kind)
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
            if self.gate.is_paused:
                await self.gate.wait_open()  # hints keep accumulating meanwhile
                continue
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
                self.in_flight = len(covered[0]) + len(covered[1])
                self.counters.rescans += 1
                try:
                    ok = await self._pass(UpdateMode.NORMAL, None, "interval update")
                finally:
                    self.in_flight = 0
                if not ok:  # failed, or paused (None): the full pass is still owed
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
            if len(self.pending) > MAX_HINTED_KEYS:
                # A burst (a checkout, `touch` of a tree): one full pass — a stat walk —
                # costs less than looking up each hinted key's tracking row.
                self.log.info("source.burst_full_pass", hinted=len(self.pending))
                self.needs_full_pass = True
                continue
            if self.pending:
                keys = sorted(self.pending)
                self.pending.clear()
                self.in_flight = len(keys)
                try:
                    ok = await self._pass(UpdateMode.NORMAL, keys, "change")
                finally:
                    self.in_flight = 0
                if not ok:
                    self.pending.update(keys)  # kept for the retry or the resume, never lost
                    if ok is None:
                        continue
                    if self.failure is not None and not is_database_unavailable(self.failure):
                        self.needs_full_pass = True
                continue
            self.wakeup = anyio.Event()
            with anyio.move_on_after(max(0.0, next_rescan - time.monotonic())):
                await self.wakeup.wait()

    def _on_hints(self, hints: ChangeHints) -> None:
        self.counters.watcher_events += (
            len(hints.keys) + len(hints.dirs) + int(hints.rescan) + int(hints.full_pass)
        )
        self.pending.update(hints.keys)
        self.pending_dirs.update(hints.dirs)
        if hints.full_pass:
            self.needs_full_pass = True  # after any backoff: an edit is not a recovery
        if hints.rescan:
            self.needs_full_pass = True
            self.retry_at = None  # the root is back (or watched again): try now
            self.wakeup.set()
        elif self.retry_at is None:
            self.wakeup.set()
