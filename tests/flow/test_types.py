"""Python annotations → engine types, constants, and value conversion at function edges."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
import pytest
from numpy.typing import NDArray

from cocod.errors import FlowDefinitionError
from cocod.flow.types import (
    LocalDateTime,
    TypeAttr,
    TypeKind,
    ValueType,
    Vector,
    basic,
    to_engine_value,
    to_python_value,
    type_of_annotation,
    type_of_constant,
)


@dataclasses.dataclass
class Chunk:
    text: str
    start: int
    score: float | None = None


class Point(NamedTuple):
    x: float
    y: float


@pytest.mark.parametrize(
    ("annotation", "kind"),
    [
        (str, "Str"),
        (bytes, "Bytes"),
        (bool, "Bool"),
        (int, "Int64"),
        (float, "Float64"),
        (uuid.UUID, "Uuid"),
        (datetime.date, "Date"),
        (datetime.time, "Time"),
        (datetime.datetime, "OffsetDateTime"),  # v0's mapping (timestamptz)
        (LocalDateTime, "LocalDateTime"),
        (Annotated[str, TypeAttr("cocoindex.io/hint", 1)], "Str"),
        (datetime.timedelta, "TimeDelta"),
        (Any, "Json"),
        (dict[str, int], "Json"),
        (Annotated[str, TypeKind("Range")], "Range"),
    ],
)
def test_basic_annotations(annotation: Any, kind: str) -> None:
    assert type_of_annotation(annotation) == basic(kind)


def test_optional_is_nullable_and_a_real_union_is_union() -> None:
    assert type_of_annotation(str | None) == basic("Str", nullable=True)
    assert type_of_annotation(int | str) == ValueType("Union")
    assert type_of_annotation(int | str | None) == ValueType("Union", nullable=True)


def test_vectors_keep_their_element_and_dimension() -> None:
    v = type_of_annotation(Vector[np.float32, Literal[384]])
    assert (v.kind, v.element, v.dimension) == ("Vector", basic("Float32"), 384)
    assert v.describe() == "Vector[Float32, 384]"
    assert type_of_annotation(Vector[float, Literal[3]]).element == basic("Float64")
    unsized = type_of_annotation(list[int])
    assert (unsized.kind, unsized.element, unsized.dimension) == ("Vector", basic("Int64"), None)
    assert type_of_annotation(NDArray[np.float64]).element == basic("Float64")


def test_structs_and_tables_from_dataclasses_and_named_tuples() -> None:
    chunk = type_of_annotation(Chunk)
    assert chunk.kind == "Struct" and chunk.python_type is Chunk
    assert [(f.name, f.type.describe()) for f in chunk.fields] == [
        ("text", "Str"),
        ("start", "Int64"),
        ("score", "Float64?"),
    ]
    assert type_of_annotation(Point).describe() == "Struct(x: Float64, y: Float64)"
    rows = type_of_annotation(list[Chunk])
    assert rows.kind == "LTable" and rows.is_table and rows.field("text") is not None
    keyed = type_of_annotation(dict[str, Point])
    assert keyed.kind == "KTable" and [f.name for f in keyed.fields] == ["_key", "x", "y"]


def test_unsupported_annotation_is_a_definition_error_naming_it() -> None:
    with pytest.raises(FlowDefinitionError, match=r"unsupported type annotation.*complex"):
        type_of_annotation(complex)


def test_to_json_is_canonical_and_ignores_python_classes() -> None:
    a = type_of_annotation(Chunk)
    b = type_of_annotation(list[Chunk])
    assert a.to_json()["fields"][2] == ["score", {"kind": "Float64", "nullable": True}]
    assert "python_type" not in str(b.to_json())
    assert type_of_annotation(Vector[np.float32, Literal[4]]).to_json() == {
        "kind": "Vector",
        "element": {"kind": "Float32"},
        "dimension": 4,
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, basic("Bool")),  # bool before int: True is an int in Python
        (3, basic("Int64")),
        (2.5, basic("Float64")),
        ("s", basic("Str")),
        (b"b", basic("Bytes")),
        (None, basic("Json", nullable=True)),
        (datetime.date(2024, 1, 2), basic("Date")),
        ({"a": 1}, basic("Json")),
    ],
)
def test_constants(value: object, expected: ValueType) -> None:
    assert type_of_constant(value) == expected


def test_values_cross_the_function_boundary_both_ways() -> None:
    rows_type = type_of_annotation(list[Chunk])
    engine = to_engine_value([Chunk("a", 0), {"text": "b", "start": 1, "score": 0.5}], rows_type)
    assert engine == [
        {"text": "a", "start": 0, "score": None},
        {"text": "b", "start": 1, "score": 0.5},
    ]
    back = to_python_value(engine, list[Chunk], rows_type)
    assert back == [Chunk("a", 0, None), Chunk("b", 1, 0.5)]

    keyed = type_of_annotation(dict[str, Point])
    engine_keyed = to_engine_value({"p": Point(1.0, 2.0)}, keyed)
    assert engine_keyed == [{"_key": "p", "x": 1.0, "y": 2.0}]
    assert to_python_value(engine_keyed, dict[str, Point], keyed) == {"p": Point(1.0, 2.0)}

    vec = to_engine_value([1, 2], type_of_annotation(Vector[np.float32, Literal[2]]))
    assert isinstance(vec, np.ndarray) and vec.dtype == np.float32
    assert to_engine_value(None, rows_type) is None
    with pytest.raises(TypeError, match="expected a struct value"):
        to_engine_value(["not a struct"], rows_type)


def test_a_naive_datetime_becomes_utc_where_an_offset_is_expected() -> None:
    naive = datetime.datetime(2024, 5, 1, 12, 30)
    value = to_engine_value(naive, type_of_annotation(datetime.datetime))
    assert value == naive.replace(tzinfo=datetime.UTC)
    aware = datetime.datetime(
        2024, 5, 1, 12, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    assert to_engine_value(aware, type_of_annotation(datetime.datetime)) is aware
