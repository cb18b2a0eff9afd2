"""The sample app: index this project's own docs/ with the real embedding model.

Written exactly as a CocoIndex v0 app would be, with ``import cocod as cocoindex``:

    cocod update -f examples/docs_flow.py
"""

from __future__ import annotations

from pathlib import Path

import cocod as cocoindex

DOCS = Path(__file__).resolve().parent.parent / "docs"


@cocoindex.flow_def(name="ProjectDocs")
def project_docs_flow(flow_builder: cocoindex.FlowBuilder, data_scope: cocoindex.DataScope) -> None:
    data_scope["documents"] = flow_builder.add_source(
        cocoindex.sources.LocalFile(path=str(DOCS), included_patterns=["*.md"])
    )
    doc_embeddings = data_scope.add_collector()
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
            doc_embeddings.collect(
                filename=doc["filename"],
                location=chunk["location"],
                text=chunk["text"],
                embedding=chunk["embedding"],
            )
    doc_embeddings.export(
        "doc_embeddings",
        cocoindex.targets.Postgres(),
        primary_key_fields=["filename", "location"],
        vector_indexes=[
            cocoindex.VectorIndexDef(
                field_name="embedding",
                metric=cocoindex.VectorSimilarityMetric.COSINE_SIMILARITY,
            )
        ],
    )
