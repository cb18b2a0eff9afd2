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
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from cocod.engine.evaluator import Evaluator, FunctionRunner, RowMemo
from cocod.engine.fingerprint import Fingerprinter
from cocod.engine.interfaces import (
    ExportWrite,
    Ordinal,
    RowCommit,
    SourceReader,
    StateStore,
    TrackedRow,
)
from cocod.engine.plan import ExportPlan, FlowPlan, SourcePlan
from cocod.engine.stats import SourceUpdateStats
from cocod.engine.values import key_from_json_text, key_to_json_text
from cocod.errors import DuplicateKeyError, RowError, SourceError

log = structlog.get_logger(__name__)

TRACKING_LOAD_CHUNK = 512
MAX_ROWS_PER_TRANSACTION = 64


class UpdateMode(enum.IntEnum):
    NORMAL = 0
    REEXPORT = 1
    FULL_REPROCESS = 2


class _Outcome(enum.Enum):
    INSERTED = "num_insertions"
    UPDATED = "num_updates"
    REPROCESSED = "num_reprocesses"
    DELETED = "num_deletions"
    NO_CHANGE = "num_no_change"


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


@dataclass
class _Pending:
    commit: RowCommit
    outcome: _Outcome


async def run_source_pass(
    ctx: SourcePassContext,
    mode: UpdateMode = UpdateMode.NORMAL,
    only_keys: Sequence[str] | None = None,
) -> SourceUpdateStats:
    """Bring the targets up to date with the source (or with ``only_keys`` of it)."""
    stats = SourceUpdateStats()
    logger = log.bind(flow=ctx.flow_name, source=ctx.source.name)
    listed, tracked = await _list_and_load(ctx, only_keys)
    logic_fp = ctx.source.logic_fp

    candidates: list[str] = []
    if listed is not None:
        for key, ordinal in listed.items():
            previous = tracked.get(key)
            if (
                previous is not None
                and mode == UpdateMode.NORMAL
                and previous[0] == ordinal
                and previous[1] == logic_fp
            ):
                stats.num_no_change += 1
            else:
                candidates.append(key)
        candidates.extend(k for k in tracked if k not in listed)
    else:
        candidates = _expand_hinted_keys(only_keys or (), tracked)

    if candidates:
        try:
            await _process_candidates(ctx, candidates, listed, tracked, mode, stats, logger)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
    if stats.has_changes:
        try:
            removed = await ctx.store.collect_memo_garbage(ctx.memo_retention_seconds)
            if removed:
                logger.debug("memo.collected", entries=removed)
        except Exception as e:  # GC is housekeeping: never fail a pass for it
            logger.warning("memo.collect_failed", error=str(e))
    return stats


async def _process_candidates(
    ctx: SourcePassContext,
    candidates: list[str],
    listed: dict[str, Ordinal] | None,
    tracked: dict[str, Any],
    mode: UpdateMode,
    stats: SourceUpdateStats,
    logger: Any,
) -> None:
    send, receive = anyio.create_memory_object_stream[_Pending](MAX_ROWS_PER_TRANSACTION)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_run_committer, ctx, receive, stats, logger)
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
                        )


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error that matters in a task group's failure: a source-level one first."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(group)
    for leaf in leaves:
        if isinstance(leaf, SourceError):
            return leaf
    return leaves[0] if leaves else group


async def _list_and_load(
    ctx: SourcePassContext, only_keys: Sequence[str] | None
) -> tuple[dict[str, Ordinal] | None, dict[str, tuple[Ordinal | None, bytes | None]]]:
    """List the source (a thread) while the tracked ordinals load (the database)."""
    listed: dict[str, Ordinal] | None = None

    async def list_source() -> None:
        nonlocal listed
        listed = await ctx.reader.list_rows()

    try:
        async with anyio.create_task_group() as tg:
            if only_keys is None:
                tg.start_soon(list_source)
            tracked = await ctx.store.load_ordinals(ctx.source_id, only_keys)
    except BaseExceptionGroup as group:
        raise _first_error(group) from None
    return listed, tracked


def _expand_hinted_keys(hints: Sequence[str], tracked: dict[str, Any]) -> list[str]:
    """Keys named by change hints, plus tracked keys under any hinted folder.

    A folder moved away or deleted is reported as one path; the files it held are the
    tracked keys under that prefix.
    """
    keys = dict.fromkeys(hints)
    prefixes = tuple(h + "/" for h in hints)
    if prefixes:
        for key in tracked:
            if key.startswith(prefixes):
                keys[key] = None
    return list(keys)


async def _process_row_guarded(
    ctx: SourcePassContext,
    key: str,
    tracked: TrackedRow | None,
    mode: UpdateMode,
    send: MemoryObjectSendStream[_Pending],
    limiter: anyio.Semaphore,
    stats: SourceUpdateStats,
    logger: Any,
) -> None:
    stats.num_starts += 1
    try:
        async with send:
            pending = await _process_row(ctx, key, tracked, mode)
            if pending is None:
                stats.num_no_change += 1
                stats.num_ends += 1
            else:
                await send.send(pending)
    except SourceError:
        raise  # the whole source is gone (e.g. its root): abort the pass, touch nothing
    except Exception as e:
        stats.num_errors += 1
        stats.num_ends += 1
        logger.error(
            "row.failed", key=key, error=_describe(e), exc_info=not isinstance(e, RowError)
        )
    finally:
        limiter.release()


def _describe(e: BaseException) -> str:
    return str(e) if isinstance(e, RowError | OSError) else f"{type(e).__name__}: {e}"


async def _process_row(
    ctx: SourcePassContext,
    key: str,
    tracked: TrackedRow | None,
    mode: UpdateMode,
) -> _Pending | None:
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
                writes[export.name] = ExportWrite(deletes=_keys_of(export, keys))
        commit = RowCommit(ctx.source_id, key, None, writes, released_memo_keys=tracked.memo_keys)
        return _Pending(commit, _Outcome.DELETED)

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
        return _Pending(RowCommit(ctx.source_id, key, refreshed), _Outcome.NO_CHANGE)

    memo = RowMemo(ctx.store, read_cache=mode != UpdateMode.FULL_REPROCESS)
    collected = await ctx.evaluator.evaluate(row.value, memo)
    commit = _build_commit(ctx, key, row.ordinal, row.content_fp, collected, memo, tracked, mode)
    if tracked is None:
        outcome = _Outcome.INSERTED
    elif tracked.logic_fp != logic_fp or mode != UpdateMode.NORMAL:
        outcome = _Outcome.REPROCESSED
    else:
        outcome = _Outcome.UPDATED
    return _Pending(commit, outcome)


def recorded_keys(export: ExportPlan, tracked: TrackedRow) -> dict[str, str]:
    """Keys (→ value fingerprints) this row wrote to the export's *current* table."""
    entry = tracked.target_keys.get(export.name)
    if not entry or entry.get("target") != export.target_signature:
        return {}
    keys: dict[str, str] = entry.get("keys", {})
    return keys


def _keys_of(export: ExportPlan, key_texts: dict[str, str]) -> list[list[Any]]:
    return [key_from_json_text(k, export.key_types) for k in key_texts]


def _build_commit(
    ctx: SourcePassContext,
    key: str,
    ordinal: Ordinal | None,
    content_fp: bytes,
    collected: dict[str, list[dict[str, Any]]],
    memo: RowMemo,
    tracked: TrackedRow | None,
    mode: UpdateMode,
) -> RowCommit:
    writes: dict[str, ExportWrite] = {}
    target_keys: dict[str, dict[str, Any]] = {}
    old_uuids = tracked.uuids if tracked else {}
    new_uuids: dict[str, list[str]] = {}
    for export in ctx.plan.exports.values():
        rows = collected.get(export.export.collector.name, [])
        old_keys = recorded_keys(export, tracked) if tracked else {}
        new_keys: dict[str, str] = {}
        write = ExportWrite()
        uuid_field = export.uuid_field
        for row in rows:
            if uuid_field is not None:
                row[uuid_field] = _stable_uuid(row, uuid_field, old_uuids, new_uuids)
            key_values = [row.get(k) for k in export.key_fields]
            for name, value in zip(export.key_fields, key_values, strict=True):
                if value is None:
                    raise RowError(
                        f"flow {ctx.flow_name!r} source {ctx.source.name!r} key {key!r}: "
                        f"export {export.name!r} collected a row whose primary key field "
                        f"{name!r} is null"
                    )
            key_text = key_to_json_text(key_values, export.key_types)
            if key_text in new_keys:
                raise DuplicateKeyError(
                    f"flow {ctx.flow_name!r} source {ctx.source.name!r} key {key!r}: export "
                    f"{export.name!r} collected two rows with primary key {key_text} "
                    f"({', '.join(export.key_fields)}); make the key unique per row"
                )
            fp = Fingerprinter().add(export.schema_version)
            for v in export.value_fields:
                fp.add(row.get(v))
            value_fp = fp.digest().hex()
            new_keys[key_text] = value_fp
            if old_keys.get(key_text) != value_fp or mode != UpdateMode.NORMAL:
                write.upserts.append(row)
        stale = [k for k in old_keys if k not in new_keys]
        write.deletes = _keys_of(export, dict.fromkeys(stale, ""))
        if write.upserts or write.deletes:
            writes[export.name] = write
        target_keys[export.name] = {"target": export.target_signature, "keys": new_keys}
    new_tracked = TrackedRow(
        ordinal=ordinal,
        content_fp=content_fp,
        logic_fp=ctx.source.logic_fp,
        target_keys=target_keys,
        memo_keys=sorted(memo.used),
        uuids=new_uuids,
    )
    released = sorted(set(tracked.memo_keys) - memo.used) if tracked else []
    return RowCommit(ctx.source_id, key, new_tracked, writes, memo.new_entries, released)


def _stable_uuid(
    row: dict[str, Any],
    uuid_field: str,
    old: dict[str, list[str]],
    new: dict[str, list[str]],
) -> uuid.UUID:
    """The n-th row with the same other values keeps the n-th UUID it had before."""
    fp = Fingerprinter()
    for name in sorted(row):
        if name != uuid_field:
            fp.add(name).add(row[name])
    h = fp.digest().hex()
    assigned = new.setdefault(h, [])
    previous = old.get(h, [])
    value = previous[len(assigned)] if len(assigned) < len(previous) else str(uuid.uuid4())
    assigned.append(value)
    return uuid.UUID(value)


async def _run_committer(
    ctx: SourcePassContext,
    receive: MemoryObjectReceiveStream[_Pending],
    stats: SourceUpdateStats,
    logger: Any,
) -> None:
    async with receive:
        async for first in receive:
            batch = [first]
            while len(batch) < MAX_ROWS_PER_TRANSACTION:
                try:
                    batch.append(receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            await _commit_batch(ctx, batch, stats, logger)


async def _commit_batch(
    ctx: SourcePassContext, batch: list[_Pending], stats: SourceUpdateStats, logger: Any
) -> None:
    try:
        # Shielded: cancelling a pass (daemon drain, abort) lets the transaction in
        # flight finish instead of cutting it off mid-way.
        with anyio.CancelScope(shield=True):
            await ctx.store.commit_rows([p.commit for p in batch])
        done = batch
    except Exception as e:
        if len(batch) == 1:
            _count_commit_failure(batch[0], e, stats, logger)
            return
        # Isolate the failing row(s): every other row still commits on its own.
        done = []
        for p in batch:
            try:
                await ctx.store.commit_rows([p.commit])
                done.append(p)
            except Exception as row_error:
                _count_commit_failure(p, row_error, stats, logger)
    for p in done:
        setattr(stats, p.outcome.value, getattr(stats, p.outcome.value) + 1)
        stats.num_ends += 1


def _count_commit_failure(p: _Pending, e: Exception, stats: SourceUpdateStats, logger: Any) -> None:
    stats.num_errors += 1
    stats.num_ends += 1
    logger.error("row.commit_failed", key=p.commit.key, error=_describe(e))
