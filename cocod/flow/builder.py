"""FlowBuilder, DataScope, DataSlice, DataCollector: the v0 declarative API.

Calls record ops into a :class:`~cocod.flow.graph.FlowGraph`. Transforms are type-checked
at the call, like v0. A transform's result is *pending* until it is assigned to a field
(which names it) or used (which gives it a generated name), so ``scope["x"] = s.transform(f)``
records exactly one op, named ``x``. Whether the calls are consistent (scopes, collector
schemas, exports) is decided by :mod:`cocod.flow.rules`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cocod.errors import FlowDefinitionError
from cocod.flow.graph import (
    CollectOp,
    Collector,
    ConstantInput,
    FieldRef,
    FlowGraph,
    ForEachOp,
    GeneratedField,
    Input,
    Scope,
    Source,
    TransformOp,
)
from cocod.flow.index import FtsIndexDef, VectorIndexDef, VectorSimilarityMetric
from cocod.flow.naming import snake_case, validate_field_name
from cocod.flow.rules import add_export, deepest_scope, function_of, merge_collected_fields
from cocod.flow.specs import (
    AnalyzedFunction,
    ArgSchema,
    SourceSpec,
    TargetSpec,
)
from cocod.flow.types import type_of_constant
from cocod.flow.value_type import ValueType, table

T = TypeVar("T")


class _Recorder:
    """Mutable state shared by every handle of one flow being defined."""

    def __init__(self, graph: FlowGraph) -> None:
        self.graph = graph
        self._counters: dict[str, int] = {}

    def next_name(self, prefix: str) -> str:
        n = self._counters.get(prefix, 0)
        self._counters[prefix] = n + 1
        return f"{prefix}_{n}"


@dataclass
class _PendingTransform:
    function: AnalyzedFunction
    args: list[Input]
    kwargs: dict[str, Input]
    scope: Scope
    default_prefix: str


@dataclass
class _PendingSource:
    source: Source


class DataSlice(Generic[T]):
    """A value in a scope: a field, a sub-field, a constant, or a pending transform."""

    def __init__(
        self,
        recorder: _Recorder,
        *,
        ref: FieldRef | None = None,
        pending: _PendingTransform | _PendingSource | None = None,
        value_type: ValueType,
    ) -> None:
        self._recorder = recorder
        self._ref = ref
        self._pending = pending
        self._type = value_type

    @property
    def value_type(self) -> ValueType:
        return self._type

    # -- materialisation ---------------------------------------------------------------------
    def _attach(self, scope: Scope, name: str) -> FieldRef:
        if self._ref is not None:
            raise ValueError("DataSlice is already attached to a field")
        pending = self._pending
        if isinstance(pending, _PendingSource):
            if scope.parent is not None:
                raise FlowDefinitionError("a source can only be assigned to the root scope")
            source = pending.source
            source.name = name
            self._recorder.graph.sources[name] = source
            scope.fields[name] = self._type
        elif isinstance(pending, _PendingTransform):
            if not scope.is_descendant_of(pending.scope):
                raise FlowDefinitionError(
                    f"cannot assign to field {name!r} of scope {scope.label!r}: the value is "
                    f"computed in scope {pending.scope.label!r}, which is not an ancestor"
                )
            scope.fields[name] = self._type
            scope.ops.append(TransformOp(name, pending.function, pending.args, pending.kwargs))
        else:  # pragma: no cover - constructor invariant
            raise AssertionError("slice with neither ref nor pending op")
        self._ref = FieldRef(scope, (name,), self._type)
        self._pending = None
        return self._ref

    def _materialize(self) -> FieldRef:
        if self._ref is not None:
            if self._ref.scope.is_closed:
                raise FlowDefinitionError(
                    f"field {self._ref.describe()!r} belongs to row scope "
                    f"{self._ref.scope.label!r}, which was closed when its `with` block ended"
                )
            return self._ref
        pending = self._pending
        if isinstance(pending, _PendingSource):
            prefix = snake_case(pending.source.spec.kind())
            return self._attach(self._recorder.graph.root, self._recorder.next_name(prefix))
        assert isinstance(pending, _PendingTransform)
        return self._attach(pending.scope, self._recorder.next_name(pending.default_prefix))

    # -- v0 API ------------------------------------------------------------------------------
    def __getitem__(self, field_name: str) -> DataSlice[Any]:
        ref = self._materialize()
        if self._type.kind != "Struct":
            raise KeyError(
                f"field {field_name!r} does not exist: {ref.describe()!r} is a "
                f"{self._type.describe()}, not a struct"
            )
        sub = self._type.field(field_name)
        if sub is None:
            raise KeyError(f"struct {ref.describe()!r} has no field {field_name!r}")
        return DataSlice(
            self._recorder,
            ref=FieldRef(ref.scope, (*ref.path, field_name), sub.type),
            value_type=sub.type,
        )

    def row(
        self, *, max_inflight_rows: int | None = None, max_inflight_bytes: int | None = None
    ) -> DataScope:
        """A child scope evaluated once per row of this table."""
        ref = self._materialize()
        if not self._type.is_table:
            raise FlowDefinitionError(
                f"row() needs a table, but {ref.describe()!r} is a {self._type.describe()}"
            )
        child = Scope(parent=ref.scope, label=f"{ref.scope.label}.{ref.describe()}".lstrip("."))
        for f in self._type.fields:
            child.fields[f.name] = f.type
        ref.scope.ops.append(ForEachOp(ref, child))
        return DataScope(self._recorder, child)

    def for_each(self, f: Callable[[DataScope], None], **kwargs: Any) -> None:
        with self.row(**kwargs) as scope:
            f(scope)

    def transform(self, fn_spec: Any, *args: Any, **kwargs: Any) -> DataSlice[Any]:
        return _transform(self._recorder, fn_spec, (self, *args), kwargs)

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return func(self, *args, **kwargs)


def _input_of(recorder: _Recorder, value: Any) -> Input:
    if isinstance(value, DataSlice):
        return value._materialize()
    if isinstance(value, GeneratedField):
        raise FlowDefinitionError("GeneratedField can only be used in collect()")
    return ConstantInput(value, type_of_constant(value))


def _transform(
    recorder: _Recorder, fn_spec: Any, args: Sequence[Any], kwargs: dict[str, Any]
) -> DataSlice[Any]:
    inline = getattr(fn_spec, "_cocod_inline", None)
    if inline is not None:  # a transform_flow called inside a flow: inline its ops
        return inline(*args, **kwargs)  # type: ignore[no-any-return]
    definition, spec = function_of(fn_spec)
    arg_inputs = [_input_of(recorder, a) for a in args]
    kwarg_inputs = {k: _input_of(recorder, v) for k, v in kwargs.items()}
    all_inputs = [*arg_inputs, *kwarg_inputs.values()]
    analyzed = definition.analyze(
        spec,
        [_arg_schema(i) for i in arg_inputs],
        {k: _arg_schema(i) for k, i in kwarg_inputs.items()},
    )
    scope = deepest_scope(all_inputs, f"transform {analyzed.kind}")
    prefix = snake_case(analyzed.kind)
    pending = _PendingTransform(analyzed, arg_inputs, kwarg_inputs, scope, prefix)
    return DataSlice(recorder, pending=pending, value_type=analyzed.output_type)


def _arg_schema(i: Input) -> ArgSchema:
    if isinstance(i, ConstantInput):
        return ArgSchema(i.type, is_constant=True, value=i.value)
    return ArgSchema(i.type)


class DataScope:
    """Fields of the root scope or of one row; ``with`` closes a row scope."""

    def __init__(self, recorder: _Recorder, scope: Scope) -> None:
        self._recorder = recorder
        self._scope = scope

    def _check_open(self) -> None:
        if self._scope.is_closed:
            raise FlowDefinitionError(
                f"row scope {self._scope.label!r} is used after its `with` block ended"
            )

    def __getitem__(self, field_name: str) -> DataSlice[Any]:
        self._check_open()
        vtype = self._scope.fields.get(field_name)
        if vtype is None:
            raise KeyError(f"field {field_name!r} does not exist in scope {self._scope.label!r}")
        return DataSlice(
            self._recorder, ref=FieldRef(self._scope, (field_name,), vtype), value_type=vtype
        )

    def __setitem__(self, field_name: str, value: DataSlice[Any]) -> None:
        self._check_open()
        validate_field_name(field_name)
        if field_name in self._scope.fields:
            raise FlowDefinitionError(
                f"field {field_name!r} already exists in scope {self._scope.label!r}"
            )
        if not isinstance(value, DataSlice):
            raise FlowDefinitionError(
                f"only DataSlices can be assigned to fields, got {type(value).__name__}"
            )
        value._attach(self._scope, field_name)

    def __enter__(self) -> DataScope:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._scope.parent is not None:
            self._scope.is_closed = True

    def add_collector(self, name: str | None = None) -> DataCollector:
        self._check_open()
        graph = self._recorder.graph
        if name is None:
            name = f"_collector_{len(graph.collectors)}"
        collector = Collector(name, self._scope)
        graph.collectors.append(collector)
        return DataCollector(self._recorder, collector)


class DataCollector:
    """Rows collected from any descendant scope, exported to a target."""

    def __init__(self, recorder: _Recorder, collector: Collector) -> None:
        self._recorder = recorder
        self._collector = collector

    def collect(self, **fields: Any) -> None:
        collector = self._collector
        values: list[tuple[str, Input | GeneratedField]] = []
        field_types: dict[str, ValueType] = {}
        uuid_fields = [n for n, v in fields.items() if v is GeneratedField.UUID]
        if len(uuid_fields) > 1:
            raise ValueError("at most one GeneratedField.UUID field can be collected per row")
        for name, value in fields.items():
            validate_field_name(name)
            if value is GeneratedField.UUID:
                values.append((name, GeneratedField.UUID))
                field_types[name] = ValueType("Uuid")
                continue
            inp = _input_of(self._recorder, value)
            values.append((name, inp))
            field_types[name] = inp.type
        inputs = [v for _, v in values if not isinstance(v, GeneratedField)]
        scope = deepest_scope(inputs, f"collect into {collector.name!r}")
        if not scope.is_descendant_of(collector.owner):
            raise FlowDefinitionError(
                f"collector {collector.name!r} belongs to scope {collector.owner.label!r}; "
                f"it cannot collect from scope {scope.label!r}"
            )
        merge_collected_fields(collector, field_types, uuid_fields[0] if uuid_fields else None)
        scope.ops.append(CollectOp(collector, values))

    def export(
        self,
        target_name: str,
        target_spec: TargetSpec,
        /,
        *,
        primary_key_fields: Sequence[str],
        attachments: Sequence[Any] = (),
        vector_indexes: Sequence[VectorIndexDef] = (),
        fts_indexes: Sequence[FtsIndexDef] = (),
        vector_index: Sequence[tuple[str, VectorSimilarityMetric]] = (),
        setup_by_user: bool = False,
    ) -> None:
        add_export(
            self._recorder.graph,
            self._collector,
            target_name,
            target_spec,
            primary_key_fields=primary_key_fields,
            attachments=attachments,
            vector_indexes=vector_indexes,
            fts_indexes=fts_indexes,
            vector_index=vector_index,
            setup_by_user=setup_by_user,
        )


class FlowBuilder:
    """Entry point of a flow definition: adds sources and root-level transforms."""

    def __init__(self, recorder: _Recorder) -> None:
        self._recorder = recorder

    def add_source(
        self,
        spec: SourceSpec,
        /,
        *,
        name: str | None = None,
        refresh_interval: datetime.timedelta | None = None,
        max_inflight_rows: int | None = None,
        max_inflight_bytes: int | None = None,
    ) -> DataSlice[Any]:
        if not isinstance(spec, SourceSpec):
            raise ValueError(f"add_source() expects a source spec, got {spec!r}")
        row, num_key_parts = spec.row_schema()
        source = Source(
            name="",
            spec=spec,
            row_type=row,
            num_key_parts=num_key_parts,
            refresh_interval=refresh_interval,
            max_inflight_rows=max_inflight_rows,
            max_inflight_bytes=max_inflight_bytes,
        )
        slice_: DataSlice[Any] = DataSlice(
            self._recorder, pending=_PendingSource(source), value_type=table("KTable", row)
        )
        if name is not None:
            validate_field_name(name)
            slice_._attach(self._recorder.graph.root, name)
        return slice_

    def transform(self, fn_spec: Any, *args: Any, **kwargs: Any) -> DataSlice[Any]:
        if not args and not kwargs:
            raise FlowDefinitionError("FlowBuilder.transform() needs at least one input")
        return _transform(self._recorder, fn_spec, args, kwargs)

    def declare(self, spec: Any) -> None:
        raise FlowDefinitionError(
            f"declarations ({type(spec).__name__}) are for graph databases, which cocod "
            "does not support"
        )


def record_flow(
    name: str, full_name: str, fl_def: Callable[[FlowBuilder, DataScope], None]
) -> FlowGraph:
    """Run a flow definition function and return the graph it recorded."""
    graph = FlowGraph(name=name, full_name=full_name, root=Scope(parent=None, label=""))
    recorder = _Recorder(graph)
    fl_def(FlowBuilder(recorder), DataScope(recorder, graph.root))
    return graph


__all__ = [
    "DataCollector",
    "DataScope",
    "DataSlice",
    "FlowBuilder",
    "GeneratedField",
    "record_flow",
]
