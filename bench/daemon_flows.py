"""Flow factories the benchmark's daemon config names (``bench.daemon_flows:...``).

The daemon figures (``cocod status`` latency, memory per live instance) run the real
``cocod serve``, which loads flows from a factory named in config.toml. Same flow shape as
bench/worker.py: LocalFile → SplitRecursively(markdown, 2000/500) → embed → Postgres.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

import cocod as cocoindex

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class Params:
    source_path: str
    table: str
    real_model: bool = False
    vector_index: bool = True


@cocoindex.op.function(cache=True, behavior_version=1)
def bench_tiny_embed(text: str) -> cocoindex.Vector[np.float32, Literal[8]]:
    """A deterministic 8-dim stand-in for a model (same as bench/worker.py's)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return np.frombuffer(digest, dtype=np.uint8).astype(np.float32) + 1.0  # type: ignore[return-value]


def factory(params: Params) -> Callable[[cocoindex.FlowBuilder, cocoindex.DataScope], None]:
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["documents"] = fb.add_source(
            cocoindex.sources.LocalFile(path=params.source_path, included_patterns=["*.md"])
        )
        out = scope.add_collector()
        with scope["documents"].row() as doc:
            doc["chunks"] = doc["content"].transform(
                cocoindex.functions.SplitRecursively(),
                language="markdown",
                chunk_size=2000,
                chunk_overlap=500,
            )
            with doc["chunks"].row() as chunk:
                embed = (
                    cocoindex.functions.SentenceTransformerEmbed(model=MODEL)
                    if params.real_model
                    else bench_tiny_embed
                )
                chunk["embedding"] = chunk["text"].transform(embed)
                out.collect(
                    filename=doc["filename"],
                    location=chunk["location"],
                    text=chunk["text"],
                    embedding=chunk["embedding"],
                )
        indexes = (
            [
                cocoindex.VectorIndexDef(
                    "embedding", cocoindex.VectorSimilarityMetric.COSINE_SIMILARITY
                )
            ]
            if params.vector_index
            else []
        )
        out.export(
            "chunks",
            cocoindex.targets.Postgres(table_name=params.table),
            primary_key_fields=["filename", "location"],
            vector_indexes=indexes,
        )

    return define
