"""Compile a recorded FlowGraph into what update passes need.

The logic fingerprint of a source covers every op under its row scopes, every export and
each target's schema version: any change to the flow reprocesses the source's rows (cached
function results for unchanged inputs are still reused, so this is cheap where it matters).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cocod.engine.fingerprint import fingerprint
from cocod.engine.values import to_json_value
from cocod.flow.graph import (
    CollectOp,
    ConstantInput,
    Export,
    FieldRef,
    FlowGraph,
    ForEachOp,
    GeneratedField,
    Input,
    Scope,
    Source,
    TransformOp,
)
from cocod.flow.specs import spec_to_json
from cocod.flow.types import ValueType


@dataclass
class ExportPlan:
    export: Export
    key_fields: list[str]
    key_types: list[ValueType]
    value_fields: list[str]
    value_types: list[ValueType]
    schema_version: int = 1
    target_signature: str = ""
    """Which table and key columns the keys recorded for this export refer to. Keys
    recorded under another signature (table renamed, key changed) are not in the current
    table: they are neither deleted nor carried over."""

    @property
    def name(self) -> str:
        return self.export.name

    @property
    def uuid_field(self) -> str | None:
        return self.export.collector.uuid_field

    def definition_json(self) -> dict[str, Any]:
        e = self.export
        spec = spec_to_json(e.target)
        # How setup treats a pre-existing table does not change what rows are written.
        spec.pop("adopt_existing", None)
        return {
            "name": e.name,
            "collector": e.collector.name,
            "target": {"kind": e.target.kind(), "spec": spec},
            "keys": [
                [n, t.to_json()] for n, t in zip(self.key_fields, self.key_types, strict=True)
            ],
            "values": [
                [n, t.to_json()] for n, t in zip(self.value_fields, self.value_types, strict=True)
            ],
            "vector_indexes": [spec_to_json(i) for i in e.vector_indexes],
            "schema_version": self.schema_version,
            "table": self.target_signature,
        }


@dataclass
class SourcePlan:
    source: Source
    for_each: list[ForEachOp]
    logic_fp: bytes = b""

    @property
    def name(self) -> str:
        return self.source.name


@dataclass
class FlowPlan:
    graph: FlowGraph
    sources: dict[str, SourcePlan] = field(default_factory=dict)
    exports: dict[str, ExportPlan] = field(default_factory=dict)

    def refresh_logic_fingerprints(self) -> None:
        """Recompute after schema versions change (setup may bump them)."""
        for sp in self.sources.values():
            fed = _collectors_fed(sp.for_each)
            body = {
                "source": sp.name,
                "scopes": [_op_json(op) for op in sp.for_each],
                "exports": [
                    e.definition_json()
                    for e in self.exports.values()
                    if e.export.collector.name in fed
                ],
            }
            sp.logic_fp = fingerprint(json.dumps(body, sort_keys=True, default=repr))


def compile_plan(graph: FlowGraph) -> FlowPlan:
    plan = FlowPlan(graph)
    for name, source in graph.sources.items():
        ops = [
            op for op in graph.root.ops if isinstance(op, ForEachOp) and op.table.path == (name,)
        ]
        plan.sources[name] = SourcePlan(source, ops)
    for export in graph.exports:
        fields = export.collector.fields
        key_fields = list(export.primary_key_fields)
        value_fields = [n for n in fields if n not in key_fields]
        plan.exports[export.name] = ExportPlan(
            export=export,
            key_fields=key_fields,
            key_types=[fields[n].with_nullable(False) for n in key_fields],
            value_fields=value_fields,
            value_types=[fields[n] for n in value_fields],
        )
    plan.refresh_logic_fingerprints()
    return plan


def _collectors_fed(for_each: list[ForEachOp]) -> set[str]:
    names: set[str] = set()

    def visit(scope: Scope) -> None:
        for op in scope.ops:
            if isinstance(op, CollectOp):
                names.add(op.collector.name)
            elif isinstance(op, ForEachOp):
                visit(op.child)

    for op in for_each:
        visit(op.child)
    return names


def _input_json(i: Input | GeneratedField) -> Any:
    if isinstance(i, GeneratedField):
        return {"generated": i.value}
    if isinstance(i, ConstantInput):
        return {"const": to_json_value(i.value, i.type), "type": i.type.to_json()}
    assert isinstance(i, FieldRef)
    return {"ref": [i.scope.depth, list(i.path)]}


def _op_json(op: TransformOp | ForEachOp | CollectOp) -> Any:
    if isinstance(op, TransformOp):
        return {
            "transform": op.output,
            "function": op.function.identity_json(),
            "args": [_input_json(a) for a in op.args],
            "kwargs": {k: _input_json(v) for k, v in sorted(op.kwargs.items())},
        }
    if isinstance(op, ForEachOp):
        return {"for_each": _input_json(op.table), "scope": _scope_json(op.child)}
    return {
        "collect": op.collector.name,
        "values": [[n, _input_json(v)] for n, v in op.values],
    }


def _scope_json(scope: Scope) -> Any:
    return {
        "fields": [[n, t.to_json()] for n, t in scope.fields.items()],
        "ops": [_op_json(op) for op in scope.ops],
    }
