"""The JSON schema an LLM must answer in for ``ExtractByLlm``, from the output's engine type.

It follows v0's options for OpenAI-compatible services (``rust/cocoindex/src/llm/openai.rs``
``json_schema_options``): every field required, nullable ones as ``[type, "null"]``, no
additional properties, formats (dates, UUIDs) described in words rather than ``format``,
and a dataclass's docstring as the object's description.
"""

from __future__ import annotations

import inspect
from typing import Any

from cocod.errors import FlowDefinitionError
from cocod.flow.types import ValueType

_SCALAR_SCHEMA: dict[str, dict[str, Any]] = {
    "Str": {"type": "string"},
    "Bool": {"type": "boolean"},
    "Int64": {"type": "integer"},
    "Float32": {"type": "number"},
    "Float64": {"type": "number"},
    "Bytes": {"type": "string", "description": "base64-encoded bytes"},
    "Uuid": {"type": "string", "description": "a UUID, e.g. 123e4567-e89b-12d3-a456-426614174000"},
    "Date": {"type": "string", "description": "a date, YYYY-MM-DD"},
    "Time": {"type": "string", "description": "a time, HH:MM:SS"},
    "LocalDateTime": {"type": "string", "description": "a date-time, YYYY-MM-DDTHH:MM:SS"},
    "OffsetDateTime": {
        "type": "string",
        "description": "a date-time with offset, YYYY-MM-DDTHH:MM:SS+HH:MM",
    },
    "TimeDelta": {"type": "number", "description": "a duration in seconds"},
    "Range": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
}


def json_schema(vtype: ValueType) -> dict[str, Any]:
    """The JSON schema the model must answer in, for one engine type."""
    kind = vtype.kind
    if kind in _SCALAR_SCHEMA:
        schema = dict(_SCALAR_SCHEMA[kind])
    elif kind == "Vector":
        assert vtype.element is not None
        schema = {"type": "array", "items": json_schema(vtype.element)}
    elif kind in ("Struct", "KTable", "LTable"):
        obj: dict[str, Any] = {
            "type": "object",
            "properties": {f.name: json_schema(f.type) for f in vtype.fields},
            "required": [f.name for f in vtype.fields],
            "additionalProperties": False,
        }
        doc = _doc_of(vtype.python_type)
        if doc:
            obj["description"] = doc
        schema = obj if kind == "Struct" else {"type": "array", "items": obj}
    else:
        raise FlowDefinitionError(
            f"ExtractByLlm: output type {vtype.describe()} cannot be asked of an LLM; use a "
            "dataclass of str, int, float, bool, dates, lists and nested dataclasses"
        )
    if vtype.nullable:
        if isinstance(schema.get("type"), str):
            schema["type"] = [schema["type"], "null"]
        else:
            schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def _doc_of(python_type: Any) -> str | None:
    if python_type is None:
        return None
    doc = inspect.getdoc(python_type)
    # A dataclass without a docstring gets its signature as __doc__: not a description.
    if not doc or doc.startswith(f"{getattr(python_type, '__name__', '')}("):
        return None
    return doc
