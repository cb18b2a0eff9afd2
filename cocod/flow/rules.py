"""The consistency rules of a flow definition, apart from the handles that record it.

``cocod.flow.builder`` holds the v0 handles (``DataSlice``, ``DataScope``, ...) that turn
the user's calls into graph ops. Whether those calls make a consistent flow is decided
here: what ``transform()`` accepts as a function, which scope an op over several fields
runs in, how ``collect()`` calls merge into one collector schema, and what an ``export()``
needs (primary keys that exist and can be keys, vector indexes on collected fields, one
export per name). These rules work on the graph alone (no handle state), and the target
setup later relies on exactly them, so they are kept in one place to read and test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cocod.errors import FlowDefinitionError
from cocod.flow.graph import Collector, Export, FieldRef, FlowGraph, Input, Scope
from cocod.flow.index import FtsIndexDef, VectorIndexDef, VectorSimilarityMetric
from cocod.flow.naming import validate_target_name
from cocod.flow.specs import (
    FunctionDefinition,
    FunctionSpec,
    TargetSpec,
    function_definition_for,
)
from cocod.flow.value_type import KEY_KINDS, ValueType


def function_of(fn: Any) -> tuple[FunctionDefinition, Any]:
    """Resolve what users pass to ``transform``: a spec instance or a decorated function."""
    resolver = getattr(fn, "_cocod_function", None)
    if resolver is not None:
        definition, spec = resolver()
        return definition, spec
    if isinstance(fn, FunctionSpec):
        return function_definition_for(fn), fn
    raise FlowDefinitionError(
        f"transform() expects a function spec or a @cocod.op.function, got {fn!r}"
    )


def deepest_scope(inputs: Sequence[Input], what: str) -> Scope:
    """The scope an op over ``inputs`` runs in: the deepest of theirs, which must see all
    the others (a row scope sees its ancestors, never a sibling)."""
    scopes = [i.scope for i in inputs if isinstance(i, FieldRef)]
    if not scopes:
        raise FlowDefinitionError(f"{what} needs at least one DataSlice input")
    deepest = max(scopes, key=lambda s: s.depth)
    for s in scopes:
        if not deepest.is_descendant_of(s):
            raise FlowDefinitionError(
                f"{what} mixes fields of unrelated scopes {s.label!r} and {deepest.label!r}"
            )
    return deepest


def merge_collected_fields(
    collector: Collector, field_types: dict[str, ValueType], uuid_field: str | None
) -> None:
    """Fold one ``collect()``'s fields into the collector's schema.

    A field every collect gives keeps its type; one that some collect leaves
    out (or gives as nullable) becomes nullable; the same name with another type, or a
    second UUID field, is a definition error.
    """
    if collector.uuid_field is not None and uuid_field not in (None, collector.uuid_field):
        raise FlowDefinitionError(
            f"collector {collector.name!r} already generates UUIDs in field "
            f"{collector.uuid_field!r}"
        )
    collector.uuid_field = collector.uuid_field or uuid_field
    first = collector.num_collects == 0
    for name, vtype in field_types.items():
        existing = collector.fields.get(name)
        if existing is None:
            collector.fields[name] = vtype if first else vtype.with_nullable()
        elif existing.with_nullable(False) != vtype.with_nullable(False):
            raise FlowDefinitionError(
                f"collector {collector.name!r} field {name!r} was collected as "
                f"{existing.describe()} and now as {vtype.describe()}"
            )
        elif vtype.nullable and not existing.nullable:
            collector.fields[name] = existing.with_nullable()
    if not first:
        for name, vtype in list(collector.fields.items()):
            if name not in field_types:
                collector.fields[name] = vtype.with_nullable()
    collector.num_collects += 1


def add_export(
    graph: FlowGraph,
    collector: Collector,
    target_name: str,
    target_spec: TargetSpec,
    *,
    primary_key_fields: Sequence[str],
    attachments: Sequence[Any] = (),
    vector_indexes: Sequence[VectorIndexDef] = (),
    fts_indexes: Sequence[FtsIndexDef] = (),
    vector_index: Sequence[tuple[str, VectorSimilarityMetric]] = (),
    setup_by_user: bool = False,
) -> None:
    """Check one ``DataCollector.export()`` against the collector's schema and record it."""
    validate_target_name(target_name)
    if collector.owner.parent is not None:
        raise FlowDefinitionError(
            f"export {target_name!r}: only collectors of the root scope can be exported"
        )
    if not isinstance(target_spec, TargetSpec):
        raise FlowDefinitionError(f"export {target_name!r}: {target_spec!r} is not a target spec")
    if any(e.name == target_name for e in graph.exports):
        raise FlowDefinitionError(f"export {target_name!r} is defined twice")
    pk = tuple(primary_key_fields)
    if not pk:
        raise FlowDefinitionError(f"export {target_name!r} needs primary_key_fields")
    for key in pk:
        ftype = collector.fields.get(key)
        if ftype is None:
            raise FlowDefinitionError(
                f"export {target_name!r}: primary key field {key!r} is not collected "
                f"(collected: {', '.join(collector.fields) or 'nothing'})"
            )
        if not is_key_type(ftype):
            raise FlowDefinitionError(
                f"export {target_name!r}: primary key field {key!r} has type "
                f"{ftype.describe()}, which cannot be a key"
            )
    indexes = tuple(vector_indexes) or tuple(
        VectorIndexDef(field_name=f, metric=m) for f, m in vector_index
    )
    for index in indexes:
        if index.field_name not in collector.fields:
            raise FlowDefinitionError(
                f"export {target_name!r}: vector index field {index.field_name!r} is not collected"
            )
    graph.exports.append(
        Export(
            name=target_name,
            collector=collector,
            target=target_spec,
            primary_key_fields=pk,
            vector_indexes=indexes,
            fts_indexes=tuple(fts_indexes),
            setup_by_user=setup_by_user,
            attachments=tuple(attachments),
        )
    )


def is_key_type(vtype: ValueType) -> bool:
    if vtype.kind == "Struct":
        return all(is_key_type(f.type) for f in vtype.fields)
    return vtype.kind in KEY_KINDS
