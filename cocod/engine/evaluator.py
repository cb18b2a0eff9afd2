"""Evaluate a flow for source rows: scope by scope, op by op, vectorised over rows.

Within one source row, each op runs once over all rows of its scope (e.g. every chunk of a
file), so a function sees its inputs in bulk. Across source rows, concurrent evaluations
share one :class:`FunctionRunner` per op, which deduplicates in-flight memo keys and, for
batching functions, merges calls from many rows into one batch.

What one source row may produce is bounded (:data:`DEFAULT_MAX_ROWS_PER_SOURCE_ROW` rows
per collector, ``COCOD_MAX_ROWS_PER_SOURCE_ROW`` in the runtime): the check runs while rows
are collected, before a huge scope is evaluated, so a hostile input costs bounded memory.
Synchronous user functions run in worker threads under the shared limiter; only ``async``
functions run on the event loop.
"""

from __future__ import annotations

import inspect
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from cocod.engine.batching import Batcher, Promise
from cocod.engine.fingerprint import Fingerprinter
from cocod.engine.values import decode_memo_value, encode_memo_value
from cocod.errors import RowError
from cocod.flow.graph import (
    CollectOp,
    ConstantInput,
    FieldRef,
    ForEachOp,
    GeneratedField,
    Input,
    Scope,
    TransformOp,
)
from cocod.flow.specs import AnalyzedFunction, FunctionExecutor

RECENT_RESULTS_CAPACITY = 8192
THREADED_KEYS_MIN_CALLS = 256
THREADED_KEYS_MIN_BYTES = 1 << 20
DEFAULT_MAX_ROWS_PER_SOURCE_ROW = 100_000
MAX_ROWS_KNOB = "COCOD_MAX_ROWS_PER_SOURCE_ROW"


class MemoLookup(Protocol):
    async def memo_lookup(self, fps: Sequence[bytes]) -> dict[bytes, bytes]: ...


@dataclass
class RowMemo:
    """Memo keys one source row used, and the entries it must persist with its commit."""

    store: MemoLookup | None
    read_cache: bool = True  # False for full reprocessing: recompute, then overwrite
    used: set[bytes] = field(default_factory=set)
    new_entries: dict[bytes, bytes] = field(default_factory=dict)
    calls: int = 0


@dataclass
class _RowContext:
    parent: _RowContext | None
    values: dict[str, Any]


def _exceeds(calls: list[tuple[list[Any], dict[str, Any]]], todo: list[int], limit: int) -> bool:
    """Whether the text and bytes inputs of these calls add up to ``limit`` or more."""
    total = 0
    for i in todo:
        args, kwargs = calls[i]
        for v in (*args, *kwargs.values()):
            if isinstance(v, str | bytes):
                total += len(v)
                if total >= limit:
                    return True
    return False


class FunctionRunner:
    """Everything needed to call one transform op: executor, memo, batching, threads."""

    def __init__(self, function: AnalyzedFunction, limiter: anyio.CapacityLimiter) -> None:
        self.function = function
        self._limiter = limiter
        self._executor: FunctionExecutor | None = None
        self._executor_lock = anyio.Lock()
        self._identity = json.dumps(function.identity_json(), sort_keys=True, default=repr)
        self._key_prefix = Fingerprinter().add(self._identity)
        self._inflight: dict[bytes, Promise[bytes]] = {}
        self._recent: OrderedDict[bytes, bytes] = OrderedDict()
        self._batcher: Batcher | None = None
        self._warmed = False
        self._warm_lock = anyio.Lock()
        self.num_calls = 0
        self.num_memo_hits = 0
        """Calls answered from the memo (this pass, the recent cache or the store, or another
        row's computation of the same inputs) instead of running the function: the daemon's
        hit-rate metric, beside ``num_calls``."""

    async def _get_executor(self) -> FunctionExecutor:
        if self._executor is None:
            async with self._executor_lock:
                if self._executor is None:
                    self._executor = await anyio.to_thread.run_sync(
                        self.function.create_executor, limiter=self._limiter
                    )
        return self._executor

    async def prepare(self) -> None:
        """Create the executor and warm it up (an embedding model loads) before a row
        needs it.  Executors are lazy, so setup or an update with nothing to compute loads
        no model; a live updater knows after its catch-up pass that edits will come, and
        calling this then moves the load (tens of seconds on a busy machine) out of the
        first edit's pass.  An executor's ``warm()``, if any, is awaited (a coroutine
        function) or run in a worker thread.  Idempotent; raises what creating or warming
        raises (a caller warming ahead of need may log it and go on).
        """
        executor = await self._get_executor()
        async with self._warm_lock:
            if self._warmed:
                return
            warm = getattr(executor, "warm", None)
            if callable(warm):
                if inspect.iscoroutinefunction(warm):
                    await warm()
                else:
                    # Abandoned on cancel: a drain must not wait out a model load that
                    # nothing is waiting for (the thread finishes on its own).
                    await anyio.to_thread.run_sync(
                        warm, limiter=self._limiter, abandon_on_cancel=True
                    )
            self._warmed = True

    def memo_key(self, args: Sequence[Any], kwargs: dict[str, Any]) -> bytes:
        fp = self._key_prefix.copy()
        for a in args:
            fp.add(a)
        for k in sorted(kwargs):
            fp.add(k).add(kwargs[k])
        return fp.digest()

    async def run(self, calls: list[tuple[list[Any], dict[str, Any]]], memo: RowMemo) -> list[Any]:
        """Results for many calls (one per row of a scope), skipping nulls and memo hits."""
        results: list[Any] = [None] * len(calls)
        required = self.function.required_inputs
        todo: list[int] = []
        for i, (args, kwargs) in enumerate(calls):
            if any((args[r] if isinstance(r, int) else kwargs.get(r)) is None for r in required):
                continue
            todo.append(i)
        if not todo:
            return results
        if not self.function.options.cache:
            values = await self._compute([calls[i] for i in todo])
            for i, v in zip(todo, values, strict=True):
                results[i] = v
            return results
        await self._run_cached(calls, todo, results, memo)
        return results

    async def _run_cached(
        self,
        calls: list[tuple[list[Any], dict[str, Any]]],
        todo: list[int],
        results: list[Any],
        memo: RowMemo,
    ) -> None:
        out_type = self.function.output_type
        if len(todo) >= THREADED_KEYS_MIN_CALLS or _exceeds(calls, todo, THREADED_KEYS_MIN_BYTES):
            # Hashing megabytes of input is pure Python work: keep it off the event loop.
            keys = await anyio.to_thread.run_sync(
                lambda: {i: self.memo_key(*calls[i]) for i in todo}, limiter=self._limiter
            )
        else:
            keys = {i: self.memo_key(*calls[i]) for i in todo}
        memo.used.update(keys.values())
        known: dict[bytes, bytes] = {}
        for k in keys.values():
            if k in memo.new_entries:
                known[k] = memo.new_entries[k]
            elif k in self._recent and memo.read_cache:
                known[k] = self._recent[k]
                self._recent.move_to_end(k)
                memo.new_entries[k] = known[k]
        lookup = [k for k in set(keys.values()) if k not in known and k not in self._inflight]
        if lookup and memo.store is not None and memo.read_cache:
            known.update(await memo.store.memo_lookup(lookup))
        waiting: dict[bytes, Promise[bytes]] = {}
        mine: dict[bytes, int] = {}
        for i, k in keys.items():
            if k in known or k in mine or k in waiting:
                continue
            if k in self._recent and memo.read_cache:  # computed meanwhile by another row
                known[k] = memo.new_entries[k] = self._recent[k]
                continue
            if k in self._inflight:
                waiting[k] = self._inflight[k]
            else:
                mine[k] = i
                self._inflight[k] = Promise()
        if mine:
            try:
                values = await self._compute([calls[i] for i in mine.values()])
                encoded_values = [encode_memo_value(v, out_type) for v in values]
            except BaseException as e:
                # Every future we registered must be resolved, or rows waiting on the same
                # inputs (now or in a later pass) would wait forever.
                for k in mine:
                    self._inflight.pop(k).set_exception(
                        e if isinstance(e, Exception) else RowError(f"computation abandoned: {e!r}")
                    )
                raise
            memo.calls += len(mine)
            for k, encoded in zip(mine, encoded_values, strict=True):
                known[k] = encoded
                memo.new_entries[k] = encoded
                self._remember(k, encoded)
                self._inflight.pop(k).set_result(encoded)
        for k, promise in waiting.items():
            known[k] = await promise.wait()
            memo.new_entries[k] = known[k]
        self.num_memo_hits += len(keys) - len(mine)

        def decode_all() -> None:
            decoded: dict[bytes, Any] = {}
            for i, k in keys.items():
                if k not in decoded:
                    decoded[k] = decode_memo_value(known[k], out_type)
                results[i] = decoded[k]

        if len(keys) >= THREADED_KEYS_MIN_CALLS:
            await anyio.to_thread.run_sync(decode_all, limiter=self._limiter)
        else:
            decode_all()

    def _remember(self, key: bytes, encoded: bytes) -> None:
        self._recent[key] = encoded
        if len(self._recent) > RECENT_RESULTS_CAPACITY:
            self._recent.popitem(last=False)

    def forget_recent(self) -> None:
        self._recent.clear()

    async def _compute(self, calls: list[tuple[list[Any], dict[str, Any]]]) -> list[Any]:
        executor = await self._get_executor()
        self.num_calls += len(calls)
        fn = self.function
        if fn.options.batching:
            if self._batcher is None:
                self._batcher = Batcher(self._run_batch, fn.options.max_batch_size)
            return await self._batcher.submit([args[0] for args, _ in calls])
        if fn.is_async:
            return [await executor(*a, **k) for a, k in calls]
        return await anyio.to_thread.run_sync(
            lambda: [executor(*a, **k) for a, k in calls], limiter=self._limiter
        )

    async def _run_batch(self, items: list[Any]) -> list[Any]:
        executor = await self._get_executor()
        if self.function.is_async:
            result = await executor(items)
        else:
            result = await anyio.to_thread.run_sync(executor, items, limiter=self._limiter)
        result = list(result)
        if len(result) != len(items):
            raise ValueError(
                f"batching function {self.function.kind} returned {len(result)} results "
                f"for {len(items)} inputs"
            )
        return result


class Evaluator:
    """Evaluates the row scopes of one source for single source rows."""

    def __init__(self, for_each: Sequence[ForEachOp], runners: dict[int, FunctionRunner]) -> None:
        self._for_each = for_each
        self._runners = runners

    async def evaluate(
        self,
        row_value: dict[str, Any],
        memo: RowMemo,
        *,
        max_rows_per_collector: int | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Collected rows per collector name, in collection order.

        More than ``max_rows_per_collector`` rows for one collector is a RowError, raised
        before the scope that would produce them is evaluated when its size is known.
        """
        collected: dict[str, list[dict[str, Any]]] = {}
        root = _RowContext(None, {})
        cap = max_rows_per_collector
        for op in self._for_each:
            rows = [_RowContext(root, dict(row_value))]
            await self._eval_scope(op.child, rows, memo, collected, cap)
        return collected

    async def evaluate_row(
        self, scope: Scope, values: dict[str, Any], memo: RowMemo
    ) -> dict[str, Any]:
        """Evaluate one row of a top-level row scope; returns all of its field values."""
        ctx = _RowContext(_RowContext(None, {}), dict(values))
        await self._eval_scope(scope, [ctx], memo, {}, None)
        return ctx.values

    async def _eval_scope(
        self,
        scope: Scope,
        rows: list[_RowContext],
        memo: RowMemo,
        collected: dict[str, list[dict[str, Any]]],
        cap: int | None,
    ) -> None:
        if not rows:
            return
        depth = scope.depth
        if cap is not None:
            for op in scope.ops:
                if isinstance(op, CollectOp):
                    # Every row of this scope collects once: fail before computing any.
                    _check_cap(op, len(collected.get(op.collector.name, ())) + len(rows), cap)
        for op in scope.ops:
            if isinstance(op, TransformOp):
                runner = self._runners[id(op)]
                calls = [
                    (
                        [_resolve(a, row, depth) for a in op.args],
                        {k: _resolve(v, row, depth) for k, v in op.kwargs.items()},
                    )
                    for row in rows
                ]
                for row, value in zip(rows, await runner.run(calls, memo), strict=True):
                    row.values[op.output] = value
            elif isinstance(op, ForEachOp):
                children: list[_RowContext] = []
                for row in rows:
                    ctx = _ancestor(row, depth, op.table.scope.depth)
                    table = _resolve(op.table, row, depth)
                    for child_row in table or ():
                        children.append(_RowContext(ctx, dict(child_row)))
                await self._eval_scope(op.child, children, memo, collected, cap)
            else:
                _collect(op, rows, depth, collected)


def _check_cap(op: CollectOp, count: int, cap: int) -> None:
    if count > cap:
        raise RowError(
            f"one source row produced {count:,} rows for collector {op.collector.name!r}, "
            f"over the limit of {cap:,} rows per source row; split the input, or raise "
            f"{MAX_ROWS_KNOB} if this is intended"
        )


def _collect(
    op: CollectOp,
    rows: list[_RowContext],
    depth: int,
    collected: dict[str, list[dict[str, Any]]],
) -> None:
    out = collected.setdefault(op.collector.name, [])
    for row in rows:
        out.append(
            {
                name: (None if isinstance(v, GeneratedField) else _resolve(v, row, depth))
                for name, v in op.values
            }
        )


def _ancestor(row: _RowContext, depth: int, target_depth: int) -> _RowContext:
    ctx = row
    for _ in range(depth - target_depth):
        assert ctx.parent is not None
        ctx = ctx.parent
    return ctx


def _resolve(inp: Input, row: _RowContext, depth: int) -> Any:
    if isinstance(inp, ConstantInput):
        return inp.value
    assert isinstance(inp, FieldRef)
    ctx = _ancestor(row, depth, inp.scope.depth)
    value = ctx.values.get(inp.path[0])
    for name in inp.path[1:]:
        if value is None:
            return None
        value = value.get(name)
    return value


def create_runners(
    for_each: Sequence[ForEachOp], limiter: anyio.CapacityLimiter
) -> dict[int, FunctionRunner]:
    """One runner per transform op under the given row scopes, keyed by ``id(op)``."""
    runners: dict[int, FunctionRunner] = {}

    def visit(scope: Scope) -> None:
        for op in scope.ops:
            if isinstance(op, TransformOp):
                runners[id(op)] = FunctionRunner(op.function, limiter)
            elif isinstance(op, ForEachOp):
                visit(op.child)

    for op in for_each:
        visit(op.child)
    return runners
