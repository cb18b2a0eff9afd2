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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from cocod.engine.runner import (
    RECENT_RESULTS_CAPACITY,
    THREADED_KEYS_MIN_BYTES,
    THREADED_KEYS_MIN_CALLS,
    FunctionRunner,
    MemoLookup,
    RowMemo,
)
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

DEFAULT_MAX_ROWS_PER_SOURCE_ROW = 100_000
MAX_ROWS_KNOB = "COCOD_MAX_ROWS_PER_SOURCE_ROW"

__all__ = [
    "DEFAULT_MAX_ROWS_PER_SOURCE_ROW",
    "MAX_ROWS_KNOB",
    "RECENT_RESULTS_CAPACITY",
    "THREADED_KEYS_MIN_BYTES",
    "THREADED_KEYS_MIN_CALLS",
    "Evaluator",
    "FunctionRunner",
    "MemoLookup",
    "RowMemo",
    "create_runners",
]


@dataclass
class _RowContext:
    parent: _RowContext | None
    values: dict[str, Any]


class Evaluator:
    """Evaluates the row scopes of one source for single source rows."""

    def __init__(self, for_each: Sequence[ForEachOp], runners: dict[int, FunctionRunner]) -> None:
        self._for_each = for_each
        self._runners = runners
        self._compiled: dict[int, Any] = {}
        """Per op (by id), its inputs as resolver functions, made on first use: looking a
        field up per chunk by walking the graph's scopes cost more than the look-up."""

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
            compiled = self._compiled.get(id(op))
            if compiled is None:
                compiled = self._compiled[id(op)] = _compile(op, depth)
            if isinstance(op, TransformOp):
                runner = self._runners[id(op)]
                arg_resolvers, kwarg_resolvers = compiled
                calls = [
                    (
                        [resolve(row) for resolve in arg_resolvers],
                        {k: resolve(row) for k, resolve in kwarg_resolvers},
                    )
                    for row in rows
                ]
                for row, value in zip(rows, await runner.run(calls, memo), strict=True):
                    row.values[op.output] = value
            elif isinstance(op, ForEachOp):
                up, resolve_table = compiled
                children: list[_RowContext] = []
                for row in rows:
                    ctx = row
                    for _ in range(up):
                        assert ctx.parent is not None
                        ctx = ctx.parent
                    for child_row in resolve_table(row) or ():
                        children.append(_RowContext(ctx, dict(child_row)))
                await self._eval_scope(op.child, children, memo, collected, cap)
            else:
                out = collected.setdefault(op.collector.name, [])
                for row in rows:
                    out.append({name: resolve(row) for name, resolve in compiled})


Resolver = Callable[[_RowContext], Any]


def _compile(op: TransformOp | ForEachOp | CollectOp, depth: int) -> Any:
    """An op's inputs as resolvers for rows of a scope at ``depth``."""
    if isinstance(op, TransformOp):
        return (
            [_resolver(a, depth) for a in op.args],
            [(k, _resolver(v, depth)) for k, v in op.kwargs.items()],
        )
    if isinstance(op, ForEachOp):
        return depth - op.table.scope.depth, _resolver(op.table, depth)
    return [
        (name, _none if isinstance(v, GeneratedField) else _resolver(v, depth))
        for name, v in op.values
    ]


def _none(_row: _RowContext) -> None:
    return None  # a generated field (a UUID): filled in when the commit is built


def _resolver(inp: Input, depth: int) -> Resolver:
    """What ``inp`` reads from a row of a scope at ``depth``: a constant, or a field of
    the row or of an ancestor row, then down a path of struct fields (None stops it)."""
    if isinstance(inp, ConstantInput):
        constant = inp.value
        return lambda _row: constant
    assert isinstance(inp, FieldRef)
    up = depth - inp.scope.depth
    first, rest = inp.path[0], inp.path[1:]
    if up == 0 and not rest:
        return lambda row: row.values.get(first)

    def resolve(row: _RowContext) -> Any:
        ctx = row
        for _ in range(up):
            assert ctx.parent is not None
            ctx = ctx.parent
        value = ctx.values.get(first)
        for name in rest:
            if value is None:
                return None
            value = value.get(name)
        return value

    return resolve


def _check_cap(op: CollectOp, count: int, cap: int) -> None:
    if count > cap:
        raise RowError(
            f"one source row produced {count:,} rows for collector {op.collector.name!r}, "
            f"over the limit of {cap:,} rows per source row; split the input, or raise "
            f"{MAX_ROWS_KNOB} if this is intended"
        )


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
