"""Index declarations attached to exports (v0's ``index.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal


class VectorSimilarityMetric(Enum):
    COSINE_SIMILARITY = "CosineSimilarity"
    L2_DISTANCE = "L2Distance"
    INNER_PRODUCT = "InnerProduct"


@dataclass
class HnswVectorIndexMethod:
    kind: Literal["Hnsw"] = "Hnsw"
    m: int | None = None
    ef_construction: int | None = None


@dataclass
class IvfFlatVectorIndexMethod:
    kind: Literal["IvfFlat"] = "IvfFlat"
    lists: int | None = None


VectorIndexMethod = HnswVectorIndexMethod | IvfFlatVectorIndexMethod


@dataclass
class VectorIndexDef:
    field_name: str
    metric: VectorSimilarityMetric
    method: VectorIndexMethod | None = None


@dataclass
class FtsIndexDef:
    field_name: str
    parameters: dict[str, object] | None = None


@dataclass
class IndexOptions:
    primary_key_fields: Sequence[str]
    vector_indexes: Sequence[VectorIndexDef] = ()
    fts_indexes: Sequence[FtsIndexDef] = field(default_factory=tuple)
