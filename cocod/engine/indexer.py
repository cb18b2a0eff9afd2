"""One update pass over one source: list, compare, evaluate, diff, commit.

Change detection is cheap first: the listing's ordinal (mtime_ns, size) and the stored
logic fingerprint decide which rows to look at; for those, the content fingerprint decides
whether anything is recomputed. A restored older file therefore updates the index (v0
ignored older mtimes), and a touched file with the same content costs one hash.

Rows are evaluated concurrently; their commits flow through a bounded queue to a single
committer that applies several rows per transaction. Each row's target writes and tracking
update are in the same transaction, so a crash leaves every row either old or new.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from cocod.engine.committer import (
    MAX_ROWS_PER_TRANSACTION,
    Outcome,
    PendingCommit,
    describe_error,
    run_committer,
)
from cocod.engine.evaluator import (
    DEFAULT_MAX_ROWS_PER_SOURCE_ROW,
    Evaluator,
    FunctionRunner,
    RowMemo,
)
from cocod.engine.interfaces import (
    ExportWrite,
    Ordinal,
    RowCommit,
    SourceReader,
    StateStore,
    TrackedRow,
)
from cocod.engine.listing_diff import first_error, list_and_diff
from cocod.engine.plan import FlowPlan, SourcePlan
from cocod.engine.progress import PassProgress
from cocod.engine.progress import report as report_progress
from cocod.engine.row_commit import build_commit, keys_of, recorded_keys
from cocod.engine.stats import SourceUpdateStats
from cocod.errors import RowError, SourceError

log = structlog.get_logger(__name__)

PROGRESS_INTERVAL_S = 0.1
"""Progress events at most this often (plus one at each phase change and at the end)."""

TRACKING_LOAD_CHUNK = 512
THREADED_COMMIT_MIN_ROWS = 512
"""Diffing more collected rows than this runs in a worker thread, off the event loop."""


class BulkLoad(Protocol):
    """What a pass tells its targets around its writes, so an initial load can defer work
    (the Postgres target drops its vector indexes and builds them once at the end, see
    :mod:`cocod.storage.deferred_indexes`)."""

    async def before_writes(self, candidates: int) -> None:
        """Called once the pass knows how many source rows it will look at."""

    async def after_writes(self, *, build: bool) -> None:
        """Called however the writes ended: ``build`` is false only when the pass was
        cancelled (then the deferred work is left for the next pass)."""


class UpdateMode(enum.IntEnum):
    NORMAL = 0
    REEXPORT = 1
    FULL_REPROCESS = 2

    @classmethod
    def from_flags(cls, *, full_reprocess: bool = False, reexport: bool = False) -> UpdateMode:
        """The one mapping from the API's and CLI's flags (full reprocessing wins)."""
        if full_reprocess:
            return cls.FULL_REPROCESS
        return cls.REEXPORT if reexport else cls.NORMAL


@dataclass
class SourcePassContext:
    flow_name: str
    plan: FlowPlan
    source: SourcePlan
    source_id: int
    reader: SourceReader
    store: StateStore
    evaluator: Evaluator
    runners: dict[int, FunctionRunner]
    max_concurrent_rows: int = 16
    memo_retention_seconds: float = 3600.0
    max_rows_per_source_row: int = DEFAULT_MAX_ROWS_PER_SOURCE_ROW
    thread_limiter: anyio.CapacityLimiter | None = None
    bulk_load: BulkLoad | None = None


async def run_source_pass(
    ctx: SourcePassContext,
    mode: UpdateMode = UpdateMode.NORMAL,
    only_keys: Sequence[str] | None = None,
) -> SourceUpdateStats:
    """Bring the targets up to date with the source (or with ``only_keys`` of it)."""
    stats = SourceUpdateStats()
    logger = log.bind(flow=ctx.flow_name, source=ctx.source.name)
    reporter = ProgressReporter(PassProgress(source=ctx.source.name))
    reporter.report()
    candidates = await _find_candidates(ctx, mode, only_keys, stats, reporter.progress)
    reporter.progress.candidates = len(candidates)
    reporter.report()

    await _write_candidates(ctx, candidates, mode, stats, logger, reporter)
    if stats.has_changes:
        try:
            removed = await ctx.store.collect_memo_garbage(ctx.memo_retention_seconds)
            if removed:
                logger.debug("memo.collected", entries=removed)
        except Exception as e:  # GC is housekeeping: never fail a pass for it
            logger.warning("memo.collect_failed", error=str(e))
    reporter.progress.finished = True
    reporter.report()
    return stats


async def _write_candidates(
    ctx: SourcePassContext,
    candidates: list[str],
    mode: UpdateMode,
    stats: SourceUpdateStats,
    logger: Any,
    reporter: ProgressReporter,
) -> None:
    """Process the candidates between the bulk load's two calls: its end runs whether
    the rows succeeded or failed (a failed pass's committed rows still get their index);
    only a cancellation (BaseException, not Exception) leaves its work to the next pass."""
    bulk = ctx.bulk_load
    try:
        if bulk is not None:
            await bulk.before_writes(len(candidates))
        if candidates:
            try:
                await _process_candidates(ctx, candidates, mode, stats, logger, reporter)
            except BaseExceptionGroup as group:
                error = first_error(group)
                raise error from error.__cause__
    except BaseException as e:
        if bulk is not None:
            await bulk.after_writes(build=isinstance(e, Exception))
        raise
    if bulk is not None:
        await bulk.after_writes(build=True)


async def _find_candidates(
    ctx: SourcePassContext,
    mode: UpdateMode,
    only_keys: Sequence[str] | None,
    stats: SourceUpdateStats,
    progress: PassProgress,
) -> list[str]:
    """The keys this pass must look at: changed, new, gone, or hinted.

    A normal full pass compares its listing with the tracked ordinals, read while the
    stat() walk runs (:func:`~cocod.engine.listing_diff.list_and_diff`): a one-file edit
    in a 50,000-file source costs the walk, one query beside it and a dict pop per row.
    Reexport and full reprocessing look at every row, so they load the ordinals as before.
    """
    if only_keys is not None:
        tracked = await ctx.store.load_ordinals(ctx.source_id, only_keys)
        candidates = _expand_hinted_keys(only_keys, tracked)
        progress.listed = len(candidates)
        return candidates
    if mode == UpdateMode.NORMAL:
        listed, diff = await list_and_diff(
            ctx.reader, ctx.store, ctx.source_id, ctx.source.logic_fp, ctx.thread_limiter
        )
        progress.listed = len(listed)
        stats.num_no_change += len(listed) - len(diff.changed)
        return [*diff.changed, *diff.gone]
    listed_all, tracked_all = await _list_and_load(ctx)
    progress.listed = len(listed_all)
    candidates = list(listed_all)
    candidates.extend(k for k in tracked_all if k not in listed_all)
    return candidates


async def _process_candidates(
    ctx: SourcePassContext,
    candidates: list[str],
    mode: UpdateMode,
    stats: SourceUpdateStats,
    logger: Any,
    reporter: ProgressReporter,
) -> None:
    send, receive = anyio.create_memory_object_stream[PendingCommit](MAX_ROWS_PER_TRANSACTION)
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_committer, ctx.store, receive, stats, logger, reporter.rows_done)
        async with send:
            limiter = anyio.Semaphore(ctx.max_concurrent_rows)
            async with anyio.create_task_group() as workers:
                for start in range(0, len(candidates), TRACKING_LOAD_CHUNK):
                    chunk = candidates[start : start + TRACKING_LOAD_CHUNK]
                    rows = await ctx.store.load_tracked_rows(ctx.source_id, chunk)
                    for key in chunk:
                        await limiter.acquire()
                        workers.start_soon(
                            _process_row_guarded,
                            ctx,
                            key,
                            rows.get(key),
                            mode,
                            send.clone(),
                            limiter,
                            stats,
                            logger,
                            reporter,
                        )


class ProgressReporter:
    """Counts finished rows into the pass's :class:`PassProgress`, reporting at most
    every :data:`PROGRESS_INTERVAL_S`, so a sink costs nothing per row that matters."""

    def __init__(self, progress: PassProgress) -> None:
        self.progress = progress
        self._last = 0.0

    def report(self) -> None:
        self._last = time.monotonic()
        report_progress(self.progress)

    def rows_done(self, rows: int, chunks: int) -> None:
        self.progress.processed += rows
        self.progress.chunks += chunks
        if time.monotonic() - self._last >= PROGRESS_INTERVAL_S:
            self.report()


async def _list_and_load(
    ctx: SourcePassContext,
) -> tuple[dict[str, Ordinal], dict[str, tuple[Ordinal | None, bytes | None]]]:
    """List the source (a thread) while the tracked ordinals load (the database)."""
    listed: dict[str, Ordinal] = {}

    async def list_source() -> None:
        nonlocal listed
        listed = await ctx.reader.list_rows()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(list_source)
            tracked = await ctx.store.load_ordinals(ctx.source_id)
    except BaseExceptionGroup as group:
        error = first_error(group)
        raise error from error.__cause__
    return listed, tracked


def _expand_hinted_keys(hints: Sequence[str], tracked: dict[str, Any]) -> list[str]:
    """Keys named by change hints, plus tracked keys under any hinted folder.

    A folder moved away or deleted is reported as one path; the files it held are the
    tracked keys under that prefix. Each tracked key's ancestors are looked up in a set,
    so the cost is keys × depth, never keys × hints.
    """
    keys = dict.fromkeys(hints)
    for key in tracked:
        if key in keys:
            continue
        parts = key.split("/")
        if any("/".join(parts[:i]) in keys for i in range(1, len(parts))):
            keys[key] = None
    return list(keys)


async def _process_row_guarded(
    ctx: SourcePassContext,
    key: str,
    tracked: TrackedRow | None,
    mode: UpdateMode,
    send: MemoryObjectSendStream[PendingCommit],
    limiter: anyio.Semaphore,
    stats: SourceUpdateStats,
    logger: Any,
    reporter: ProgressReporter,
) -> None:
    stats.num_starts += 1
    try:
        async with send:
            pending = await _process_row(ctx, key, tracked, mode)
            if pending is None:
                stats.num_no_change += 1
                stats.num_ends += 1
                reporter.rows_done(1, 0)
            else:
                await send.send(pending)
    except SourceError:
        raise  # the whole source is gone (e.g. its root): abort the pass, touch nothing
    except Exception as e:
        stats.num_errors += 1
        stats.num_ends += 1
        reporter.rows_done(1, 0)
        logger.error(
            "row.failed", key=key, error=describe_error(e), exc_info=not isinstance(e, RowError)
        )
    finally:
        limiter.release()


async def _process_row(
    ctx: SourcePassContext,
    key: str,
    tracked: TrackedRow | None,
    mode: UpdateMode,
) -> PendingCommit | None:
    # Even a tracked key the listing no longer shows is read: only a file that is really
    # gone is deleted; one in a folder we could not list (permissions, I/O error) fails
    # as a row error and keeps its rows.
    row = await ctx.reader.read_row(key)
    logic_fp = ctx.source.logic_fp
    if row is None:
        if tracked is None:
            return None
        writes = {}
        for export in ctx.plan.exports.values():
            keys = recorded_keys(export, tracked)
            if keys:
                writes[export.name] = ExportWrite(deletes=keys_of(export, keys))
        commit = RowCommit(ctx.source_id, key, None, writes, released_memo_keys=tracked.memo_keys)
        return PendingCommit(commit, Outcome.DELETED)

    if (
        tracked is not None
        and mode == UpdateMode.NORMAL
        and tracked.content_fp == row.content_fp
        and tracked.logic_fp == logic_fp
    ):
        if tracked.ordinal == row.ordinal:
            return None
        refreshed = TrackedRow(
            row.ordinal,
            tracked.content_fp,
            tracked.logic_fp,
            tracked.target_keys,
            tracked.memo_keys,
            tracked.uuids,
        )
        commit = RowCommit(ctx.source_id, key, refreshed, is_refresh=True)
        return PendingCommit(commit, Outcome.NO_CHANGE)

    memo = RowMemo(ctx.store, read_cache=mode != UpdateMode.FULL_REPROCESS)
    collected = await ctx.evaluator.evaluate(
        row.value, memo, max_rows_per_collector=ctx.max_rows_per_source_row
    )
    rewrite = mode != UpdateMode.NORMAL
    args = (ctx, key, row.ordinal, row.content_fp, collected, memo, tracked, rewrite)
    if sum(len(rows) for rows in collected.values()) >= THREADED_COMMIT_MIN_ROWS:
        # Fingerprinting many rows is pure Python: keep it off the event loop.
        commit = await anyio.to_thread.run_sync(
            lambda: build_commit(*args), limiter=ctx.thread_limiter
        )
    else:
        commit = build_commit(*args)
    if tracked is None:
        outcome = Outcome.INSERTED
    elif tracked.logic_fp != logic_fp or mode != UpdateMode.NORMAL:
        outcome = Outcome.REPROCESSED
    else:
        outcome = Outcome.UPDATED
    return PendingCommit(commit, outcome)
