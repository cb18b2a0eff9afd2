"""Calling one transform op for many rows: its executor, memo, batching and threads.

Across source rows, concurrent evaluations share one :class:`FunctionRunner` per op, which
deduplicates in-flight memo keys and, for batching functions, merges calls from many rows
into one batch.  Synchronous user functions run in worker threads under the shared
limiter; only ``async`` functions run on the event loop.  (Split out of ``evaluator``,
which walks the scopes.)
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
from cocod.engine.values import decode_memo_value, encode_memo_value, is_vector_value
from cocod.errors import RowError
from cocod.flow.specs import AnalyzedFunction, FunctionExecutor

__all__ = [
    "RECENT_RESULTS_CAPACITY",
    "THREADED_KEYS_MIN_BYTES",
    "THREADED_KEYS_MIN_CALLS",
    "FunctionRunner",
    "MemoLookup",
    "RowMemo",
]

RECENT_RESULTS_CAPACITY = 8192
THREADED_KEYS_MIN_CALLS = 256
THREADED_KEYS_MIN_BYTES = 1 << 20


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
        fresh: dict[bytes, Any] = {}
        """Vectors just computed here: a copy is what decoding their encoding would give."""
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
            for k, encoded, value in zip(mine, encoded_values, values, strict=True):
                known[k] = encoded
                memo.new_entries[k] = encoded
                self._remember(k, encoded)
                self._inflight.pop(k).set_result(encoded)
                if is_vector_value(value, encoded):
                    fresh[k] = value
        for k, promise in waiting.items():
            known[k] = await promise.wait()
            memo.new_entries[k] = known[k]
        self.num_memo_hits += len(keys) - len(mine)

        def decode_all() -> None:
            decoded: dict[bytes, Any] = {}
            for i, k in keys.items():
                if k not in decoded:
                    value = fresh.get(k)
                    if value is not None:
                        decoded[k] = value.copy()
                    else:
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
