"""Flow definitions shared by tests, written in v0 style (``import cocod as cocoindex``)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

import bench.paragraph_flow
import cocod as cocoindex

EMBED_CALLS: list[str] = []
"""Every text the memoized test embedder computed, in call order."""


def tiny_vector(text: str) -> np.ndarray:
    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
    return np.frombuffer(digest, dtype=np.uint8)[:8].astype(np.float32) + 1.0


@cocoindex.op.function(cache=True, behavior_version=1)
def tiny_embed(text: str) -> cocoindex.Vector[np.float32, Literal[8]]:
    """A deterministic stand-in for a model (a seam we own); records each real call."""
    EMBED_CALLS.append(text)
    return tiny_vector(text)


@dataclass
class Paragraph:
    index: int
    text: str


@cocoindex.op.function()
def split_paragraphs(content: str, min_length: int = 0) -> list[Paragraph]:
    """Blank-line separated paragraphs (a splitter whose output tests can predict)."""
    parts = [p.strip() for p in content.split("\n\n")]
    return [Paragraph(i, p) for i, p in enumerate(p for p in parts if len(p) > min_length)]


def paragraphs_of(content: str, min_length: int = 0) -> list[Paragraph]:
    return split_paragraphs(content, min_length)


def paragraph_flow(
    source_path: str,
    *,
    table_name: str | None = None,
    min_length: int = 0,
    included: list[str] | None = None,
) -> Callable[[cocoindex.FlowBuilder, cocoindex.DataScope], None]:
    """LocalFile → paragraphs → tiny_embed → Postgres, parameterised like a flow instance."""
    return bench.paragraph_flow.paragraph_flow(
        source_path,
        table_name,
        split=split_paragraphs,
        embed=tiny_embed,
        split_args={"min_length": min_length},
        included=included,
        metric=cocoindex.VectorSimilarityMetric.COSINE_SIMILARITY,
    )
