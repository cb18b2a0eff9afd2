"""``@transform_flow``: reuse the indexing logic at query time.

Inside a flow definition, calling the decorated function simply inlines its ops. ``eval``
builds (once) a transient flow whose inputs are the function's parameters and evaluates it
with no database, so a query is embedded exactly as the indexed chunks were.
"""

from __future__ import annotations

import inspect
import threading
import typing
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio

from cocod.engine.evaluator import Evaluator, RowMemo, create_runners
from cocod.errors import FlowDefinitionError
from cocod.flow.builder import DataSlice, _Recorder
from cocod.flow.graph import FieldRef, FlowGraph, ForEachOp, Scope
from cocod.flow.types import ValueType, to_python_value, type_of_annotation
from cocod.runtime.bridge import bridge
from cocod.runtime.execution import thread_limiter

T = TypeVar("T")


class TransformFlow(Generic[T]):
    def __init__(self, fn: Callable[..., DataSlice[T]], name: str | None = None) -> None:
        self._fn = fn
        self.name = name or fn.__name__
        hints = typing.get_type_hints(fn, include_extras=True)
        self._params: list[tuple[str, ValueType]] = []
        for param in inspect.signature(fn).parameters.values():
            if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                raise ValueError(
                    f"transform flow {self.name}: parameter {param.name!r} must be positional"
                )
            annotation = hints.get(param.name)
            if annotation is None or typing.get_origin(annotation) is not DataSlice:
                raise ValueError(
                    f"transform flow {self.name}: parameter {param.name!r} must be annotated "
                    "as cocod.DataSlice[T]"
                )
            (inner,) = typing.get_args(annotation)
            self._params.append((param.name, type_of_annotation(inner)))
        returned = hints.get("return")
        self._result_annotation = (
            typing.get_args(returned)[0]
            if returned is not None and typing.get_origin(returned) is DataSlice
            else Any
        )
        self._compiled: tuple[Evaluator, Scope, str, ValueType] | None = None
        self._compile_lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> DataSlice[T]:
        """Inside a flow definition: apply the ops to the given slices."""
        return self._fn(*args, **kwargs)

    def _compile(self) -> tuple[Evaluator, Scope, str, ValueType]:
        """Build the transient flow once: runs the user's function and prepares its ops
        (which may load a model), so it is called in a worker thread, never on the loop."""
        with self._compile_lock:
            return self._compile_locked()

    def _compile_locked(self) -> tuple[Evaluator, Scope, str, ValueType]:
        if self._compiled is None:
            graph = FlowGraph(name=self.name, full_name=self.name, root=Scope(None, "_"))
            recorder = _Recorder(graph)
            body = Scope(parent=graph.root, label=self.name)
            slices: list[DataSlice[Any]] = []
            for name, vtype in self._params:
                body.fields[name] = vtype
                slices.append(
                    DataSlice(recorder, ref=FieldRef(body, (name,), vtype), value_type=vtype)
                )
            result = self._fn(*slices)
            if not isinstance(result, DataSlice):
                got = type(result).__name__
                raise FlowDefinitionError(
                    f"transform flow {self.name} must return a DataSlice, got {got}"
                )
            ref = result._materialize()
            if len(ref.path) != 1 or ref.scope is not body:
                raise FlowDefinitionError(
                    f"transform flow {self.name} must return a value computed from its inputs"
                )
            op = ForEachOp(FieldRef(graph.root, ("_input",), ref.type), body)
            evaluator = Evaluator([op], create_runners([op], thread_limiter()))
            self._compiled = (evaluator, body, ref.path[0], ref.type)
        return self._compiled

    async def _eval(self, *args: Any) -> T:
        compiled = self._compiled
        if compiled is None:
            compiled = await anyio.to_thread.run_sync(self._compile)
        evaluator, body, output, output_type = compiled
        if len(args) != len(self._params):
            raise TypeError(
                f"transform flow {self.name} takes {len(self._params)} arguments, got {len(args)}"
            )
        values = {name: value for (name, _), value in zip(self._params, args, strict=True)}
        row = await evaluator.evaluate_row(body, values, RowMemo(None))
        return to_python_value(row.get(output), self._result_annotation, output_type)  # type: ignore[no-any-return]

    def eval(self, *args: Any) -> T:
        """Evaluate with plain Python values (no database, no memo writes)."""
        return bridge.run(self._eval(*args))

    async def eval_async(self, *args: Any) -> T:
        return await bridge.run_async(self._eval(*args))


def transform_flow() -> Callable[[Callable[..., DataSlice[T]]], TransformFlow[T]]:
    def decorate(fn: Callable[..., DataSlice[T]]) -> TransformFlow[T]:
        return TransformFlow(fn)

    return decorate
