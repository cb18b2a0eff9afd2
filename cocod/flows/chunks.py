"""The one shape both built-in flows share: files → chunks → embeddings → one table.

Per file: its language from its name (``DetectProgrammingLanguage``; None for plain
text), chunks along that language's boundaries (``SplitRecursively``: markdown headings,
syntax nodes, blank lines), one embedding per chunk (memoized, so an edit re-embeds only
the chunks whose text changed). Per chunk, one row keyed by (filename, location) with
what a search prints: ``start_line``/``end_line`` (1-based, the chunk's first and last
line, from the splitter's positions) and the text; ``embedding`` has a cosine index.

The source always respects git's ignore rules (``.git/`` included), so a working tree
indexes what git would track.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cocod.flow.builder import DataScope, DataSlice, FlowBuilder
from cocod.flow.index import VectorIndexDef, VectorSimilarityMetric
from cocod.flows.params import ChunkFlowParams
from cocod.ops.functions import (
    DetectProgrammingLanguage,
    SentenceTransformerEmbed,
    SplitRecursively,
)
from cocod.ops.sources import LocalFile
from cocod.ops.targets import Postgres

EXPORT_NAME = "chunks"
"""The export (and the default table's suffix: ``<instance>__chunks``)."""

Embed = Callable[[DataSlice[Any]], DataSlice[Any]]
"""Chunk text → its embedding: the model by default; tests pass a tiny deterministic op."""

FlowDef = Callable[[FlowBuilder, DataScope], None]


def model_embed(model: str) -> Embed:
    def embed(text: DataSlice[Any]) -> DataSlice[Any]:
        return text.transform(SentenceTransformerEmbed(model=model))

    return embed


def chunk_flow(
    params: ChunkFlowParams,
    *,
    flow: str,
    included: Sequence[str],
    excluded: Sequence[str],
    chunk_size: int,
    chunk_overlap: int,
    embed: Embed | None = None,
) -> FlowDef:
    """The definition for one instance; ``included``/``excluded``/sizes are the flow's
    defaults, used where ``params`` leaves them ``None``."""
    params.check(flow)
    size = params.chunk_size if params.chunk_size is not None else chunk_size
    overlap = params.chunk_overlap if params.chunk_overlap is not None else chunk_overlap
    overlap = min(overlap, size // 2)
    source = LocalFile(
        path=params.path,
        included_patterns=list(
            included if params.included_patterns is None else params.included_patterns
        ),
        excluded_patterns=list(
            excluded if params.excluded_patterns is None else params.excluded_patterns
        ),
        max_file_size=params.max_file_size,
        respect_gitignore=True,
    )
    to_vector = embed or model_embed(params.model)

    def define(flow_builder: FlowBuilder, data_scope: DataScope) -> None:
        data_scope["files"] = flow_builder.add_source(source)
        rows = data_scope.add_collector()
        with data_scope["files"].row() as file:
            file["language"] = file["filename"].transform(DetectProgrammingLanguage())
            file["chunks"] = file["content"].transform(
                SplitRecursively(),
                language=file["language"],
                chunk_size=size,
                chunk_overlap=overlap,
            )
            with file["chunks"].row() as chunk:
                chunk["embedding"] = to_vector(chunk["text"])
                rows.collect(
                    filename=file["filename"],
                    location=chunk["location"],
                    start_line=chunk["start"]["line"],
                    end_line=chunk["end"]["line"],
                    language=file["language"],
                    text=chunk["text"],
                    embedding=chunk["embedding"],
                )
        rows.export(
            EXPORT_NAME,
            Postgres(table_name=params.table or None),
            primary_key_fields=["filename", "location"],
            vector_indexes=[VectorIndexDef("embedding", VectorSimilarityMetric.COSINE_SIMILARITY)],
        )

    return define
