"""Type-directed conversion of engine values to JSON-able data and back.

Used for memoized results, primary keys in tracking rows, and jsonb target columns. Float32
vectors get a compact binary form in the memo because embeddings dominate its size.
"""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from json.encoder import encode_basestring as _encode_json_str
from typing import Any

import numpy as np

from cocod.flow.types import ValueType

_NP_DTYPES = {"Float32": np.float32, "Float64": np.float64, "Int64": np.int64}


def to_json_value(value: Any, vtype: ValueType) -> Any:
    if value is None:
        return None
    kind = vtype.kind
    if kind in ("Str", "Bool", "Int64", "Float32", "Float64", "Json", "Union"):
        return _plain_json(value)
    if kind == "Bytes":
        return base64.b64encode(value).decode()
    if kind == "Range":
        return [int(value[0]), int(value[1])]
    if kind in ("Uuid", "Date", "Time", "LocalDateTime", "OffsetDateTime"):
        return str(value) if kind == "Uuid" else value.isoformat()
    if kind == "TimeDelta":
        return value.total_seconds()
    if kind == "Vector":
        return [x.item() if isinstance(x, np.generic) else x for x in value]
    if kind == "Struct":
        return {f.name: to_json_value(value.get(f.name), f.type) for f in vtype.fields}
    if kind in ("KTable", "LTable"):
        return [
            {f.name: to_json_value(row.get(f.name), f.type) for f in vtype.fields} for row in value
        ]
    return _plain_json(value)


def _plain_json(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_json(v) for v in value]
    if isinstance(value, uuid.UUID | datetime.date | datetime.time | datetime.datetime):
        return str(value)
    return value


def from_json_value(obj: Any, vtype: ValueType) -> Any:
    if obj is None:
        return None
    kind = vtype.kind
    if kind == "Bytes":
        return base64.b64decode(obj)
    if kind == "Range":
        return (int(obj[0]), int(obj[1]))
    if kind == "Uuid":
        return uuid.UUID(obj)
    if kind == "Date":
        return datetime.date.fromisoformat(obj)
    if kind == "Time":
        return datetime.time.fromisoformat(obj)
    if kind in ("LocalDateTime", "OffsetDateTime"):
        return datetime.datetime.fromisoformat(obj)
    if kind == "TimeDelta":
        return datetime.timedelta(seconds=obj)
    if kind == "Vector":
        elem = vtype.element
        if elem is not None and elem.kind in _NP_DTYPES:
            return np.asarray(obj, dtype=_NP_DTYPES[elem.kind])
        return list(obj)
    if kind == "Struct":
        return {f.name: from_json_value(obj.get(f.name), f.type) for f in vtype.fields}
    if kind in ("KTable", "LTable"):
        return [
            {f.name: from_json_value(row.get(f.name), f.type) for f in vtype.fields} for row in obj
        ]
    return obj


def encode_memo_value(value: Any, vtype: ValueType) -> bytes:
    """Compact bytes for the memo table: raw float32 for embeddings, JSON otherwise."""
    if (
        vtype.kind == "Vector"
        and isinstance(value, np.ndarray)
        and vtype.element is not None
        and vtype.element.kind == "Float32"
    ):
        return b"v" + np.ascontiguousarray(value, dtype=np.float32).tobytes()
    return b"j" + json.dumps(to_json_value(value, vtype), separators=(",", ":")).encode()


def is_vector_value(value: Any, encoded: bytes) -> bool:
    """Whether ``decode_memo_value(encoded)`` is exactly a copy of ``value``: a 1-D float32
    array encoded raw (so a caller holding the computed value can skip the decode)."""
    return (
        encoded[:1] == b"v"
        and type(value) is np.ndarray
        and value.dtype == np.float32
        and value.ndim == 1
    )


def decode_memo_value(data: bytes, vtype: ValueType) -> Any:
    tag, body = data[:1], data[1:]
    if tag == b"v":
        return np.frombuffer(body, dtype=np.float32).copy()
    return from_json_value(json.loads(body), vtype)


def key_to_json_text(key_values: list[Any], key_types: list[ValueType]) -> str:
    """Canonical text of a primary key, as stored in tracking rows.

    Keys of plain strings, ints and ranges of ints (a file name and a chunk's location:
    one per target row) are written directly, as ``json.dumps`` would write them; any
    other value takes the general conversion.
    """
    text = _plain_key_text(key_values, key_types)
    if text is None:
        parts = [to_json_value(v, t) for v, t in zip(key_values, key_types, strict=True)]
        text = json.dumps(parts, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (a file name that is not UTF-8) cannot go into jsonb as is;
            # escaped, the text is still valid JSON that decodes to the same key.
            parts = [to_json_value(v, t) for v, t in zip(key_values, key_types, strict=True)]
            text = json.dumps(parts, separators=(",", ":"))
    return text


def _plain_key_text(key_values: list[Any], key_types: list[ValueType]) -> str | None:
    """``json.dumps`` of the key's JSON parts (compact, not ASCII-escaped) when every part
    is an exact str, int, or 2-tuple of ints of its type; None otherwise."""
    if len(key_values) != len(key_types):
        return None  # the general path raises the mismatch
    parts: list[str] = []
    for v, t in zip(key_values, key_types, strict=True):
        kind = t.kind
        cls = type(v)
        if cls is str and kind == "Str":
            parts.append(_encode_json_str(v))
        elif cls is tuple and kind == "Range" and len(v) == 2:
            a, b = v
            if type(a) is not int or type(b) is not int:
                return None
            parts.append(f"[{a},{b}]")
        elif cls is int and kind == "Int64":
            parts.append(str(v))
        else:
            return None
    return "[" + ",".join(parts) + "]"


def key_from_json_text(text: str, key_types: list[ValueType]) -> list[Any]:
    parts = json.loads(text)
    return [from_json_value(p, t) for p, t in zip(parts, key_types, strict=True)]
