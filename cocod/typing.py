"""Type annotations for flows (``cocoindex.typing`` in v0)."""

from cocod.flow.types import (
    Float32,
    Float64,
    Int64,
    Json,
    LocalDateTime,
    OffsetDateTime,
    Range,
    TypeKind,
    Vector,
    VectorInfo,
)

__all__ = [
    "Float32",
    "Float64",
    "Int64",
    "Json",
    "LocalDateTime",
    "OffsetDateTime",
    "Range",
    "TypeKind",
    "Vector",
    "VectorInfo",
]
