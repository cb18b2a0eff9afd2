"""The recorded flow graph: what a flow definition function leaves behind.

Scopes nest: the root scope holds one table field per source; ``row()`` opens a child
scope evaluated once per row of a table. Each scope keeps its ops in definition order, which
is also evaluation order.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from cocod.flow.index import FtsIndexDef, VectorIndexDef
from cocod.flow.specs import AnalyzedFunction, SourceSpec, TargetSpec
from cocod.flow.types import ValueType


class GeneratedField(Enum):
    """Values the engine generates at collect time."""

    UUID = "Uuid"


@dataclass(eq=False)
class Scope:
    parent: Scope | None
    label: str
    fields: dict[str, ValueType] = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)
    is_closed: bool = False

    @property
    def depth(self) -> int:
        return 0 if self.parent is None else self.parent.depth + 1

    def is_descendant_of(self, other: Scope) -> bool:
        node: Scope | None = self
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False


@dataclass(frozen=True, eq=False)
class FieldRef:
    scope: Scope
    path: tuple[str, ...]
    type: ValueType

    def describe(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class ConstantInput:
    value: Any
    type: ValueType


Input = FieldRef | ConstantInput


@dataclass(eq=False)
class TransformOp:
    output: str
    function: AnalyzedFunction
    args: list[Input]
    kwargs: dict[str, Input]


@dataclass(eq=False)
class ForEachOp:
    table: FieldRef
    child: Scope


@dataclass(eq=False)
class CollectOp:
    collector: Collector
    values: list[tuple[str, Input | GeneratedField]]


Op = TransformOp | ForEachOp | CollectOp


@dataclass(eq=False)
class Source:
    name: str
    spec: SourceSpec
    row_type: ValueType
    num_key_parts: int
    refresh_interval: datetime.timedelta | None = None
    max_inflight_rows: int | None = None
    max_inflight_bytes: int | None = None


@dataclass(eq=False)
class Collector:
    name: str
    owner: Scope
    fields: dict[str, ValueType] = field(default_factory=dict)
    num_collects: int = 0
    uuid_field: str | None = None


@dataclass(eq=False)
class Export:
    name: str
    collector: Collector
    target: TargetSpec
    primary_key_fields: tuple[str, ...]
    vector_indexes: tuple[VectorIndexDef, ...] = ()
    fts_indexes: tuple[FtsIndexDef, ...] = ()
    setup_by_user: bool = False
    attachments: tuple[Any, ...] = ()

    @property
    def value_fields(self) -> tuple[str, ...]:
        return tuple(n for n in self.collector.fields if n not in self.primary_key_fields)


@dataclass(eq=False)
class FlowGraph:
    name: str
    full_name: str
    root: Scope
    sources: dict[str, Source] = field(default_factory=dict)
    collectors: list[Collector] = field(default_factory=list)
    exports: list[Export] = field(default_factory=list)
