"""v0's ``cocoindex.index``: index declarations attached to exports.

They are defined once, in :mod:`cocod.flow.index`; this module is the path v0 users import
them from (``from cocoindex.index import VectorIndexDef``).
"""

from __future__ import annotations

from cocod.flow.index import (
    FtsIndexDef,
    HnswVectorIndexMethod,
    IndexOptions,
    IvfFlatVectorIndexMethod,
    VectorIndexDef,
    VectorIndexMethod,
    VectorSimilarityMetric,
)

__all__ = [
    "FtsIndexDef",
    "HnswVectorIndexMethod",
    "IndexOptions",
    "IvfFlatVectorIndexMethod",
    "VectorIndexDef",
    "VectorIndexMethod",
    "VectorSimilarityMetric",
]
