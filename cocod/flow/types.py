"""Python annotations → engine value types, and values across custom-function boundaries.

A flow is type-checked while it is defined (like v0), so every field has a ``ValueType``
(the type model itself is :mod:`cocod.flow.value_type`; the names of it that some twenty
modules import from here are re-exported with ``as``). Values flow through
the engine as plain Python: ``str``/``bytes``/``int``/``float``/``bool``, ``numpy`` arrays
for numeric vectors, ``dict[str, Any]`` for structs, ``list[dict]`` for tables. Conversion
to and from user dataclasses happens only at custom-function boundaries.
"""

from __future__ import annotations

import dataclasses
import datetime
import types
import typing
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from cocod.errors import FlowDefinitionError

# The type model, re-exported (``as``): see the module docstring.
from cocod.flow.value_type import FieldSchema as FieldSchema
from cocod.flow.value_type import ValueType as ValueType
from cocod.flow.value_type import basic as basic
from cocod.flow.value_type import row_type, row_without_first
from cocod.flow.value_type import struct as struct
from cocod.flow.value_type import table as table

# --- annotation markers ----------------------------------------------------------------------


@dataclass(frozen=True)
class TypeKind:
    """``Annotated`` marker that pins the engine kind of a Python type."""

    kind: str


@dataclass(frozen=True)
class VectorInfo:
    dim: int | None


class TypeAttr:
    """``Annotated`` marker carrying a free-form attribute (v0's ``cocoindex.typing.TypeAttr``).

    v0 passes these to the engine as field attributes (hints for CocoInsight); they never
    change a type or a value, so cocod accepts and ignores them.
    """

    key: str
    value: Any

    def __init__(self, key: str, value: Any) -> None:
        self.key = key
        self.value = value

    def __repr__(self) -> str:
        return f"TypeAttr({self.key!r}, {self.value!r})"


Annotation = TypeKind | TypeAttr | VectorInfo
TABLE_TYPES: tuple[str, str] = ("KTable", "LTable")
KEY_FIELD_NAME: str = "_key"


Int64 = Annotated[int, TypeKind("Int64")]
Float32 = Annotated[float, TypeKind("Float32")]
Float64 = Annotated[float, TypeKind("Float64")]
Range = Annotated[tuple[int, int], TypeKind("Range")]
Json = Annotated[Any, TypeKind("Json")]
LocalDateTime = Annotated[datetime.datetime, TypeKind("LocalDateTime")]
OffsetDateTime = Annotated[datetime.datetime, TypeKind("OffsetDateTime")]

T_co = TypeVar("T_co", covariant=True)
Dim_co = TypeVar("Dim_co", bound=int | None, covariant=True)

_NUMPY_ELEMENTS: dict[Any, str] = {
    np.float32: "Float32",
    np.float64: "Float64",
    np.int64: "Int64",
}


class Vector(Generic[T_co, Dim_co]):
    """``Vector[np.float32, Literal[384]]``: an NDArray annotated with its dimension."""

    def __class_getitem__(cls, params: Any) -> Any:
        if not isinstance(params, tuple):
            params = (params, None)
        elem, dim = params
        dim_value: int | None = None
        if typing.get_origin(dim) is Literal:
            dim_value = typing.get_args(dim)[0]
        elif isinstance(dim, int):
            dim_value = dim
        if elem in _NUMPY_ELEMENTS:
            return Annotated[npt.NDArray[elem], VectorInfo(dim_value)]  # type: ignore[valid-type]
        return Annotated[list[elem], VectorInfo(dim_value)]  # type: ignore[valid-type]


# --- Python annotation → ValueType ----------------------------------------------------------

_PLAIN: dict[Any, str] = {
    str: "Str",
    bytes: "Bytes",
    bool: "Bool",
    int: "Int64",
    float: "Float64",
    uuid.UUID: "Uuid",
    datetime.date: "Date",
    datetime.time: "Time",
    # v0 maps a plain datetime to OffsetDateTime (timestamptz); a naive value is taken as UTC.
    datetime.datetime: "OffsetDateTime",
    datetime.timedelta: "TimeDelta",
}


def _element_kind_of_ndarray(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if len(args) == 2:
        dtype_args = typing.get_args(args[1])
        if dtype_args and dtype_args[0] in _NUMPY_ELEMENTS:
            return _NUMPY_ELEMENTS[dtype_args[0]]
    return "Float32"


def _is_struct_class(tp: Any) -> bool:
    return isinstance(tp, type) and (
        dataclasses.is_dataclass(tp) or (issubclass(tp, tuple) and hasattr(tp, "_fields"))
    )


def struct_type_of(tp: type) -> ValueType:
    hints = typing.get_type_hints(tp, include_extras=True)
    if dataclasses.is_dataclass(tp):
        names = [f.name for f in dataclasses.fields(tp)]
    else:
        names = list(tp._fields)  # type: ignore[attr-defined]
    return struct([(n, type_of_annotation(hints.get(n, Any))) for n in names], python_type=tp)


def type_of_annotation(annotation: Any) -> ValueType:
    """Map a Python annotation to an engine type, or raise a FlowDefinitionError."""
    if annotation is Any or annotation is typing.Any:
        return basic("Json")
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extras = typing.get_args(annotation)
        for extra in extras:
            if isinstance(extra, TypeKind):
                return basic(extra.kind)
            if isinstance(extra, VectorInfo):
                if typing.get_origin(base) is list:
                    (elem,) = typing.get_args(base)
                    elem_type = type_of_annotation(elem)
                else:
                    elem_type = basic(_element_kind_of_ndarray(base))
                return ValueType("Vector", element=elem_type, dimension=extra.dim)
        return type_of_annotation(base)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(members) < len(typing.get_args(annotation))
        if len(members) == 1:
            return type_of_annotation(members[0]).with_nullable(nullable)
        return ValueType("Union", nullable=nullable)
    if annotation in _PLAIN:
        return basic(_PLAIN[annotation])
    if origin in (list, Sequence) or annotation is list:
        args = typing.get_args(annotation)
        elem = args[0] if args else Any
        if _is_struct_class(elem):
            return table("LTable", struct_type_of(elem))
        elem_type = type_of_annotation(elem)
        return ValueType("Vector", element=elem_type, dimension=None)
    if origin in (dict, Mapping):
        key, value = typing.get_args(annotation) or (str, Any)
        if _is_struct_class(value):
            row = struct_type_of(value)
            key_type = type_of_annotation(key)
            return ValueType(
                "KTable",
                fields=(FieldSchema(KEY_FIELD_NAME, key_type), *row.fields),  # v0: "_key"
                python_type=value,
            )
        return basic("Json")
    if origin is np.ndarray or annotation is np.ndarray:
        return ValueType("Vector", element=basic(_element_kind_of_ndarray(annotation)))
    if _is_struct_class(annotation):
        return struct_type_of(annotation)
    raise FlowDefinitionError(f"unsupported type annotation {annotation!r}")


def type_of_constant(value: Any) -> ValueType:
    """Type of a plain Python constant passed where a DataSlice is expected."""
    if isinstance(value, bool):
        return basic("Bool")
    if isinstance(value, int):
        return basic("Int64")
    if isinstance(value, float):
        return basic("Float64")
    if isinstance(value, str):
        return basic("Str")
    if isinstance(value, bytes):
        return basic("Bytes")
    if value is None:
        return basic("Json", nullable=True)
    if type(value) in _PLAIN:
        return basic(_PLAIN[type(value)])
    if _is_struct_class(type(value)):
        return struct_type_of(type(value))
    return basic("Json")


# --- conversion at custom-function boundaries ------------------------------------------------


def to_engine_value(value: Any, vtype: ValueType) -> Any:
    """Python value returned by user code → engine representation (dicts for structs)."""
    if value is None:
        return None
    kind = vtype.kind
    if kind == "Struct":
        return _struct_to_dict(value, vtype)
    if kind == "LTable":
        return [_struct_to_dict(v, vtype) for v in value]
    if kind == "KTable":
        if isinstance(value, Mapping):
            key_name = vtype.fields[0].name
            return [
                {key_name: k, **_struct_to_dict(v, row_without_first(vtype))}
                for k, v in value.items()
            ]
        return [_struct_to_dict(v, vtype) for v in value]
    if kind == "Vector":
        elem = vtype.element
        if elem is not None and elem.kind in ("Float32", "Float64", "Int64"):
            dtype = {"Float32": np.float32, "Float64": np.float64, "Int64": np.int64}[elem.kind]
            return np.asarray(value, dtype=dtype)
        return list(value)
    if kind == "Range":
        start, end = value
        return (int(start), int(end))
    if kind == "OffsetDateTime":
        return as_utc_if_naive(value)
    return value


def as_utc_if_naive(value: Any) -> Any:
    """A naive datetime where an offset one is expected is UTC, as v0 reads it."""
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=datetime.UTC)
    return value


def _struct_to_dict(value: Any, vtype: ValueType) -> dict[str, Any]:
    if isinstance(value, Mapping):
        source: Mapping[str, Any] = value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        source = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif isinstance(value, tuple) and hasattr(value, "_asdict"):
        source = value._asdict()
    else:
        raise TypeError(f"expected a struct value for {vtype.describe()}, got {type(value)!r}")
    return {f.name: to_engine_value(source.get(f.name), f.type) for f in vtype.fields}


def to_python_value(value: Any, annotation: Any, vtype: ValueType) -> Any:
    """Engine value → what a user function annotated with ``annotation`` expects."""
    if value is None:
        return None
    kind = vtype.kind
    target = _strip_annotation(annotation)
    if kind == "Struct":
        if _is_struct_class(target):
            hints = typing.get_type_hints(target, include_extras=True)
            kwargs = {
                f.name: to_python_value(value.get(f.name), hints.get(f.name, Any), f.type)
                for f in vtype.fields
                if f.name in hints
            }
            return target(**kwargs)
        return dict(value)
    if kind in ("LTable", "KTable"):
        elem: Any = Any
        args = typing.get_args(target)
        if typing.get_origin(target) in (list, Sequence) and args:
            elem = args[0]
        row = row_type(vtype)
        if typing.get_origin(target) in (dict, Mapping) and kind == "KTable":
            _, value_ann = typing.get_args(target)
            key_name = vtype.fields[0].name
            rest = row_without_first(vtype)
            return {
                r[key_name]: to_python_value(
                    {k: v for k, v in r.items() if k != key_name}, value_ann, rest
                )
                for r in value
            }
        return [to_python_value(r, elem, row) for r in value]
    if kind == "Vector" and typing.get_origin(target) is list:
        return [x.item() if isinstance(x, np.generic) else x for x in value]
    return value


def _strip_annotation(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation
