"""Type annotations for flows (``cocoindex.typing`` in v0); see docs/types.md."""

from __future__ import annotations

from cocod.flow.types import (
    KEY_FIELD_NAME,
    TABLE_TYPES,
    Annotation,
    Float32,
    Float64,
    Int64,
    Json,
    LocalDateTime,
    OffsetDateTime,
    Range,
    TypeAttr,
    TypeKind,
    Vector,
    VectorInfo,
)

__all__ = [
    "KEY_FIELD_NAME",
    "TABLE_TYPES",
    "Annotation",
    "Float32",
    "Float64",
    "Int64",
    "Json",
    "LocalDateTime",
    "OffsetDateTime",
    "Range",
    "TypeAttr",
    "TypeKind",
    "Vector",
    "VectorInfo",
]
