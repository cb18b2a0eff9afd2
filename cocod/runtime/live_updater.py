"""FlowLiveUpdater: a catch-up pass, then file-system events and periodic rescans.

Per source: the watcher starts *before* the catch-up pass so no edit made during it is
lost. Events are only hints: they are debounced by the watcher, coalesced per key here, and
each key is re-checked against the file system by the engine (ordinal, then content
fingerprint). A periodic full rescan repairs anything a watcher missed (overflow, network
file systems); a vanished source root is reported, its rows are kept, and the source
resumes when the root is back.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
import watchfiles

from cocod.engine.indexer import UpdateMode
from cocod.engine.stats import IndexUpdateInfo, SourceUpdateStats
from cocod.errors import CocodError, SourceError
from cocod.runtime.bridge import bridge
from cocod.runtime.context import LibraryContext, get_context
from cocod.runtime.execution import FlowExecution
from cocod.runtime.flow import Flow
from cocod.storage.state import PostgresStateStore

log = structlog.get_logger(__name__)

DEFAULT_RESCAN_INTERVAL = datetime.timedelta(minutes=5)
WATCH_STEP_MS = 15
WATCH_DEBOUNCE_MS = 400
ROOT_POLL_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0


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


class _Status:
    """Per-source counters and an asyncio condition for next_status_updates()."""

    def __init__(self, sources: Iterable[str]) -> None:
        self.totals = {name: SourceUpdateStats() for name in sources}
        self.update_counts = dict.fromkeys(self.totals, 0)
        self.reported_counts = dict.fromkeys(self.totals, 0)
        self.active = set(self.totals)
        self.version = 0
        self.reported_version = -1
        self.condition = asyncio.Condition()
        self.initial_pending = set(self.totals)
        self.caught_up = asyncio.Event()
        if not self.initial_pending:
            self.caught_up.set()
        self.last_pass_at: float | None = None
        self.last_change_at: float | None = None
        self.last_error: str | None = None
        self.pending_changes = dict.fromkeys(self.totals, 0)

    def initial_pass_done(self, source: str) -> None:
        self.initial_pending.discard(source)
        if not self.initial_pending:
            self.caught_up.set()

    async def record(self, source: str, stats: SourceUpdateStats) -> None:
        async with self.condition:
            self.totals[source].merge(stats)
            self.last_pass_at = time.time()
            if stats.has_changes:
                self.last_change_at = self.last_pass_at
                self.update_counts[source] += 1
                self.version += 1
                self.condition.notify_all()

    async def finish(self, source: str) -> None:
        async with self.condition:
            self.active.discard(source)
            self.version += 1
            self.condition.notify_all()

    async def next_updates(self) -> FlowUpdaterStatusUpdates:
        async with self.condition:
            if not self.active and self.reported_version == self.version:
                return FlowUpdaterStatusUpdates()
            await self.condition.wait_for(lambda: self.version != self.reported_version)
            self.reported_version = self.version
            updated = [s for s, n in self.update_counts.items() if n != self.reported_counts[s]]
            self.reported_counts = dict(self.update_counts)
            return FlowUpdaterStatusUpdates(sorted(self.active), updated)


class FlowLiveUpdater:
    """Keeps one flow's targets up to date, v0's API: start/wait/abort and status."""

    def __init__(self, fl: Flow, options: FlowLiveUpdaterOptions | None = None) -> None:
        self._flow = fl
        self._options = options or FlowLiveUpdaterOptions()
        self._task: asyncio.Task[None] | None = None
        self._status: _Status | None = None
        self._error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def _start(self) -> None:
        ctx = get_context()
        execution = self._flow._execution_for(ctx)
        store, source_ids = await execution.open_store(ctx)
        self._status = _Status(execution.sources)
        self._task = asyncio.get_running_loop().create_task(
            self._run(ctx, execution, store, source_ids)
        )

    def start(self) -> None:
        bridge.run(self._start())

    async def start_async(self) -> None:
        await bridge.run_async(self._start())

    def _require_started(self) -> tuple[asyncio.Task[None], _Status]:
        if self._task is None or self._status is None:
            raise RuntimeError("Live updater is not started")
        return self._task, self._status

    async def _wait(self) -> None:
        task, _ = self._require_started()
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():
                raise

    def wait(self) -> None:
        bridge.run(self._wait())

    async def wait_async(self) -> None:
        await bridge.run_async(self._wait())

    def abort(self) -> None:
        task, _ = self._require_started()
        bridge.loop.call_soon_threadsafe(task.cancel)

    def next_status_updates(self) -> FlowUpdaterStatusUpdates:
        _, status = self._require_started()
        return bridge.run(status.next_updates())

    async def next_status_updates_async(self) -> FlowUpdaterStatusUpdates:
        _, status = self._require_started()
        return await bridge.run_async(status.next_updates())

    async def wait_caught_up_async(self) -> None:
        """Until every source finished its initial (catch-up) pass, failed or not."""
        task, status = self._require_started()

        async def wait() -> None:
            caught_up = asyncio.ensure_future(status.caught_up.wait())
            await asyncio.wait({caught_up, task}, return_when=asyncio.FIRST_COMPLETED)
            caught_up.cancel()
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

        await bridge.run_async(wait())

    def snapshot(self) -> dict[str, Any]:
        """What ``cocod status`` shows: last pass, last change, errors, pending hints."""
        _, status = self._require_started()
        return {
            "caught_up": status.caught_up.is_set(),
            "last_pass_at": status.last_pass_at,
            "last_change_at": status.last_change_at,
            "last_error": status.last_error,
            "pending_changes": sum(status.pending_changes.values()),
            "stats": self.update_stats().stats,
        }

    def update_stats(self) -> IndexUpdateInfo:
        _, status = self._require_started()
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

    # -- the work -------------------------------------------------------------------------
    async def _run(
        self,
        ctx: LibraryContext,
        execution: FlowExecution,
        store: PostgresStateStore,
        source_ids: dict[str, int],
    ) -> None:
        assert self._status is not None
        async with anyio.create_task_group() as tg:
            for name in execution.sources:
                runner = _SourceLoop(
                    ctx, execution, store, name, source_ids[name], self._options, self._status
                )
                tg.start_soon(runner.run)


def _copy(stats: SourceUpdateStats) -> SourceUpdateStats:
    copy = SourceUpdateStats()
    copy.merge(stats)
    return copy


class _SourceLoop:
    """One source of a live updater: watcher, catch-up pass, then incremental passes."""

    def __init__(
        self,
        ctx: LibraryContext,
        execution: FlowExecution,
        store: PostgresStateStore,
        name: str,
        source_id: int,
        options: FlowLiveUpdaterOptions,
        status: _Status,
    ) -> None:
        self.ctx = ctx
        self.execution = execution
        self.store = store
        self.name = name
        self.source_id = source_id
        self.options = options
        self.status = status
        self.runtime = execution.sources[name]
        source = execution.plan.sources[name].source
        spec = self.runtime.reader.spec
        self.watch = options.live_mode and spec.watch_changes is not False
        self.refresh = source.refresh_interval or (DEFAULT_RESCAN_INTERVAL if self.watch else None)
        self.generation = execution.coordination.generation
        self.pending: set[str] = set()
        self.pending_dirs: set[str] = set()
        self.needs_full_pass = False
        self.wakeup = asyncio.Event()
        self.log = log.bind(flow=execution.full_name, source=name)

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                if self.watch:
                    tg.start_soon(self._watch_forever)
                    await _let_tasks_start()
                mode = (
                    UpdateMode.FULL_REPROCESS
                    if self.options.full_reprocess
                    else UpdateMode.REEXPORT
                    if self.options.reexport_targets
                    else UpdateMode.NORMAL
                )
                label = "batch update" if not self.options.live_mode else "initial"
                ok = await self._pass(mode, None, label)
                self.status.initial_pass_done(self.name)
                if not self.options.live_mode or (not self.watch and self.refresh is None):
                    if not ok and not self.options.live_mode:
                        raise SourceError(self._last_error)
                    tg.cancel_scope.cancel()
                    return
                if not ok:
                    self.needs_full_pass = True
                await self._serve_changes()
        finally:
            self.status.initial_pass_done(self.name)
            with anyio.CancelScope(shield=True):
                await self.status.finish(self.name)

    _last_error = ""

    async def _pass(self, mode: UpdateMode, keys: list[str] | None, label: str) -> bool:
        try:
            if self.generation != self.execution.coordination.generation:
                # Setup or drop ran meanwhile: our store may name a dropped flow.
                self.store, source_ids = await self.execution.open_store(self.ctx)
                self.source_id = source_ids[self.name]
                self.generation = self.execution.coordination.generation
            stats = await self.execution.update_source(
                self.ctx, self.store, self.name, self.source_id, mode, only_keys=keys
            )
        except CocodError as e:
            self._last_error = str(e)
            self.status.last_error = f"{self.name}: {e}"
            self.log.error("source.pass_failed", error=str(e), kind=label)
            return False
        if stats.num_errors:
            self.status.last_error = f"{self.name}: {stats.num_errors} row(s) failed; see logs"
        elif keys is None:
            self.status.last_error = None
        await self.status.record(self.name, stats)
        if self.options.print_stats and (keys is None or stats.has_changes):
            print(
                f"✅ {self.execution.full_name}.{self.name} ({label}): {stats.describe()}",
                file=sys.stdout,
                flush=True,
            )
        return True

    async def _serve_changes(self) -> None:
        """Process hinted keys as they come; rescan periodically and after failures."""
        retry = 1.0
        loop = asyncio.get_running_loop()
        next_rescan = loop.time() + self.refresh.total_seconds() if self.refresh else None
        while True:
            timeout = None if next_rescan is None else max(0.0, next_rescan - loop.time())
            if self.needs_full_pass:
                timeout = min(timeout if timeout is not None else retry, retry)
            if not self.pending and not self.pending_dirs:
                with anyio.move_on_after(timeout):
                    await self.wakeup.wait()
            self.wakeup.clear()
            due = next_rescan is not None and loop.time() >= next_rescan
            if self.needs_full_pass or due:
                self.pending.clear()
                ok = await self._pass(UpdateMode.NORMAL, None, "interval update")
                self.needs_full_pass = not ok
                retry = 1.0 if ok else min(retry * 2, MAX_RETRY_SECONDS)
                if self.refresh is not None:
                    next_rescan = loop.time() + self.refresh.total_seconds()
                continue
            if self.pending_dirs:
                dirs, self.pending_dirs = sorted(self.pending_dirs), set()
                try:
                    listed = await self.runtime.reader.list_rows_under(dirs)
                except CocodError as e:
                    self.log.warning("source.list_failed", error=str(e))
                    self.needs_full_pass = True
                    continue
                # The folder keys themselves too: the engine expands them to the tracked
                # files under them, so files gone from a re-created folder are deleted.
                self.pending.update(dirs)
                self.pending.update(listed)
            if self.pending:
                keys, self.pending = sorted(self.pending), set()
                self.status.pending_changes[self.name] = 0
                ok = await self._pass(UpdateMode.NORMAL, keys, "change")
                if not ok:
                    self.needs_full_pass = True

    def _hint(self, keys: Iterable[str], full: bool = False, dirs: Iterable[str] = ()) -> None:
        self.pending.update(keys)
        self.pending_dirs.update(dirs)
        self.status.pending_changes[self.name] = len(self.pending)
        self.needs_full_pass = self.needs_full_pass or full
        self.wakeup.set()

    async def _watch_forever(self) -> None:
        """Watch the root; when it vanishes, wait for it, then watch again and rescan."""
        reader = self.runtime.reader
        root = os.path.abspath(reader.root)
        first = True
        while True:
            if not os.path.isdir(root):
                await anyio.sleep(ROOT_POLL_SECONDS)
                continue
            if not first:
                self._hint((), full=True)
            first = False
            identity = _identity(root)
            stop = anyio.Event()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._watch_root_identity, root, identity, stop)
                    async for changes in watchfiles.awatch(
                        root,
                        watch_filter=None,
                        debounce=WATCH_DEBOUNCE_MS,
                        step=WATCH_STEP_MS,
                        stop_event=stop,
                        rust_timeout=1000,
                        ignore_permission_denied=True,
                    ):
                        self._on_changes(changes)
                    tg.cancel_scope.cancel()
            except (OSError, RuntimeError) as e:
                self.log.warning("watcher.failed", error=str(e))
                self._hint((), full=True)
                await anyio.sleep(ROOT_POLL_SECONDS)

    async def _watch_root_identity(
        self, root: str, identity: tuple[int, int] | None, stop: anyio.Event
    ) -> None:
        """A root deleted and re-created is a new directory: the old watch sees nothing."""
        # Polling on purpose: there is no event for "this path now names another inode".
        while _identity(root) == identity:  # noqa: ASYNC110
            await anyio.sleep(ROOT_POLL_SECONDS)
        self.log.warning("source.root_changed", root=root)
        stop.set()

    def _on_changes(self, changes: set[tuple[watchfiles.Change, str]]) -> None:
        reader = self.runtime.reader
        keys: list[str] = []
        dirs: list[str] = []
        for _, path in changes:
            key = reader.key_of(path)
            if key is None:
                continue
            if os.path.isdir(path):
                if not reader.is_excluded_dir(key):
                    dirs.append(key)  # a folder created or moved in: list just it
            elif reader.is_candidate(key) or (
                not os.path.exists(path) and not reader.is_excluded_dir(key)
            ):
                keys.append(key)  # a file, or something deleted (perhaps a folder)
        if keys or dirs:
            self._hint(keys, dirs=dirs)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


async def _let_tasks_start() -> None:
    """Give just-started tasks a few loop turns (the watcher registers synchronously)."""
    for _ in range(5):
        await asyncio.sleep(0)
