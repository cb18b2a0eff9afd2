"""The paragraph flow: LocalFile → paragraphs → embedding → Postgres, one definition for
every harness that needs a flow whose rows it can predict.

The crash harness (``bench/crash_harness.py``) and the daemon tests' slowed flows
(``tests/daemon/harness_ops.py``, ``tests/daemon/harness_search.py``) all index files as
blank-line paragraphs keyed by (filename, index); they differ only in the split step (a
slowed one, one that logs) and the embedder. Those come in as parameters, so the graph is
written once. It lives under bench/ because bench must not depend on tests, while tests
may import bench (as tests/test_crash_harness.py already does). It needs only ``cocod``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import cocod as cocoindex

FlowDefinition = Callable[[cocoindex.FlowBuilder, cocoindex.DataScope], None]


def paragraph_flow(
    source_path: str,
    table: str | None,
    *,
    split: Any,
    embed: Any,
    split_args: Mapping[str, Any] | None = None,
    included: list[str] | None = None,
    metric: cocoindex.VectorSimilarityMetric | None = None,
) -> FlowDefinition:
    """A flow definition (what ``open_flow`` and a daemon factory return).

    ``split`` turns a file's content into rows with ``index`` and ``text`` (called with
    ``split_args`` as keyword arguments), ``embed`` turns a text into a vector; both are
    ``@cocoindex.op.function`` functions or function specs. ``metric`` adds a vector index
    on the embedding (searches need one; most harnesses do not).
    """

    indexes = [] if metric is None else [cocoindex.VectorIndexDef("embedding", metric)]

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["documents"] = fb.add_source(
            cocoindex.sources.LocalFile(path=source_path, included_patterns=included)
        )
        out = scope.add_collector()
        with scope["documents"].row() as doc:
            doc["paragraphs"] = doc["content"].transform(split, **dict(split_args or {}))
            with doc["paragraphs"].row() as para:
                para["embedding"] = para["text"].transform(embed)
                out.collect(
                    filename=doc["filename"],
                    index=para["index"],
                    text=para["text"],
                    embedding=para["embedding"],
                )
        out.export(
            "paragraphs",
            cocoindex.targets.Postgres(table_name=table),
            primary_key_fields=["filename", "index"],
            vector_indexes=indexes,
        )

    return define
