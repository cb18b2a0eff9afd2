"""A flow *factory* for the daemon: one definition, many instances with their own params.

config.toml names it as ``definition = "examples.docs_factory:docs_flow_factory"``; each
``[flows.<name>.params]`` table becomes a :class:`DocsParams` (validated: unknown or
missing keys are errors naming the instance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cocod as cocoindex


@dataclass
class DocsParams:
    """Parameters of one instance of the docs flow (a `[flows.<name>.params]` table)."""

    source_path: str
    target_table_name: str
    included_patterns: list[str] = field(default_factory=lambda: ["*.md"])


def docs_flow_factory(params: DocsParams) -> Any:
    """The daemon's entry point: one definition, many instances with their own params."""

    def define(flow_builder: cocoindex.FlowBuilder, data_scope: cocoindex.DataScope) -> None:
        data_scope["documents"] = flow_builder.add_source(
            cocoindex.sources.LocalFile(
                path=params.source_path, included_patterns=params.included_patterns
            )
        )
        embeddings = data_scope.add_collector()
        with data_scope["documents"].row() as doc:
            doc["chunks"] = doc["content"].transform(
                cocoindex.functions.SplitRecursively(),
                language="markdown",
                chunk_size=2000,
                chunk_overlap=500,
            )
            with doc["chunks"].row() as chunk:
                chunk["embedding"] = chunk["text"].transform(
                    cocoindex.functions.SentenceTransformerEmbed(
                        model="sentence-transformers/all-MiniLM-L6-v2"
                    )
                )
                embeddings.collect(
                    filename=doc["filename"],
                    location=chunk["location"],
                    text=chunk["text"],
                    embedding=chunk["embedding"],
                )
        embeddings.export(
            "doc_embeddings",
            cocoindex.targets.Postgres(table_name=params.target_table_name),
            primary_key_fields=["filename", "location"],
            vector_indexes=[
                cocoindex.VectorIndexDef(
                    field_name="embedding",
                    metric=cocoindex.VectorSimilarityMetric.COSINE_SIMILARITY,
                )
            ],
        )

    return define
