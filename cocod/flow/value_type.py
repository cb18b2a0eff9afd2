"""The engine's type model: ``ValueType`` and its constructors.

Every field of a flow has a ``ValueType``; the engine, the executors and the targets only
ever see these, never Python annotations. The model is kept apart from the annotation
mapping and value conversion of :mod:`cocod.flow.types` because it depends on nothing
(not even numpy), and everything else about types depends on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

BASIC_KINDS = (
    "Bytes",
    "Str",
    "Bool",
    "Int64",
    "Float32",
    "Float64",
    "Range",
    "Uuid",
    "Date",
    "Time",
    "LocalDateTime",
    "OffsetDateTime",
    "TimeDelta",
    "Json",
)
KEY_KINDS = frozenset({"Bytes", "Str", "Bool", "Int64", "Range", "Uuid", "Date"})
"""The kinds a primary key (part) may have: the ones with a total order and exact equality."""


@dataclass(frozen=True)
class FieldSchema:
    name: str
    type: ValueType


@dataclass(frozen=True)
class ValueType:
    """One engine type. ``python_type`` (a dataclass, NamedTuple…) only guides decoding."""

    kind: str
    nullable: bool = False
    element: ValueType | None = None
    dimension: int | None = None
    fields: tuple[FieldSchema, ...] = ()
    python_type: Any = field(default=None, compare=False, hash=False, repr=False)

    def with_nullable(self, nullable: bool = True) -> ValueType:
        return dataclasses.replace(self, nullable=nullable)

    @property
    def is_table(self) -> bool:
        return self.kind in ("KTable", "LTable")

    def field(self, name: str) -> FieldSchema | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def to_json(self) -> dict[str, Any]:
        """Canonical, fingerprintable description (no Python classes)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.nullable:
            out["nullable"] = True
        if self.element is not None:
            out["element"] = self.element.to_json()
        if self.dimension is not None:
            out["dimension"] = self.dimension
        if self.fields:
            out["fields"] = [[f.name, f.type.to_json()] for f in self.fields]
        return out

    def describe(self) -> str:
        """Short human form, as ``cocod show`` prints it."""
        if self.kind == "Vector":
            assert self.element is not None
            dim = f", {self.dimension}" if self.dimension is not None else ""
            text = f"Vector[{self.element.describe()}{dim}]"
        elif self.fields:
            inner = ", ".join(f"{f.name}: {f.type.describe()}" for f in self.fields)
            text = f"{self.kind}({inner})"
        else:
            text = self.kind
        return f"{text}?" if self.nullable else text


def basic(kind: str, nullable: bool = False) -> ValueType:
    return ValueType(kind, nullable=nullable)


def struct(fields: Sequence[tuple[str, ValueType]], python_type: Any = None) -> ValueType:
    return ValueType(
        "Struct", fields=tuple(FieldSchema(n, t) for n, t in fields), python_type=python_type
    )


def table(kind: str, row: ValueType) -> ValueType:
    return ValueType(kind, fields=row.fields, python_type=row.python_type)


def row_type(table_type: ValueType) -> ValueType:
    """One row of a table type: a table's fields are its rows' fields."""
    return ValueType("Struct", fields=table_type.fields, python_type=table_type.python_type)


def row_without_first(vtype: ValueType) -> ValueType:
    """A keyed table's row without its key field, as the user's ``dict`` values hold it."""
    return ValueType("Struct", fields=vtype.fields[1:], python_type=vtype.python_type)
