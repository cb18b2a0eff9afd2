"""Similarity queries over an export: embed the query text with the flow's own function.

The function that produced the indexed vector column is found by following the collected
field back to the transform that computed it, and its runner (with its already loaded
model and memo) embeds the query. No separate query-time configuration can drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cocod.engine.evaluator import FunctionRunner, RowMemo
from cocod.errors import FlowDefinitionError
from cocod.executors import postgres_target
from cocod.flow.graph import CollectOp, FieldRef, ForEachOp, Scope, TransformOp
from cocod.flow.index import VectorSimilarityMetric
from cocod.runtime.context import LibraryContext
from cocod.runtime.execution import FlowExecution


@dataclass
class QueryHandlerResultFields:
    """Which result fields hold the embedding and the score (v0's CocoInsight hints)."""

    embedding: list[str] = field(default_factory=list)
    score: str | None = None


@dataclass
class QueryInfo:
    embedding: list[float] | np.ndarray | None = None
    similarity_metric: VectorSimilarityMetric | None = None


@dataclass
class QueryOutput:
    results: list[dict[str, Any]]
    query_info: QueryInfo = field(default_factory=QueryInfo)


_DISTANCE_OPERATOR = {
    VectorSimilarityMetric.COSINE_SIMILARITY: "<=>",
    VectorSimilarityMetric.L2_DISTANCE: "<->",
    VectorSimilarityMetric.INNER_PRODUCT: "<#>",
}


def _score(metric: VectorSimilarityMetric, distance: float) -> float:
    """Higher is better for cosine and inner product; L2 reports the distance itself."""
    if metric is VectorSimilarityMetric.COSINE_SIMILARITY:
        return 1.0 - distance
    if metric is VectorSimilarityMetric.INNER_PRODUCT:
        return -distance
    return distance


def _find_producer(scope: Scope, collector_name: str, field_name: str) -> TransformOp | None:
    """The transform whose output is collected as ``field_name`` into the collector."""
    for op in scope.ops:
        if isinstance(op, ForEachOp):
            found = _find_producer(op.child, collector_name, field_name)
            if found is not None:
                return found
        elif isinstance(op, CollectOp) and op.collector.name == collector_name:
            for name, value in op.values:
                if name == field_name and isinstance(value, FieldRef) and len(value.path) == 1:
                    for candidate in value.scope.ops:
                        if isinstance(candidate, TransformOp) and candidate.output == value.path[0]:
                            return candidate
    return None


async def query_export(
    execution: FlowExecution,
    ctx: LibraryContext,
    text: str,
    *,
    top_k: int = 10,
    export_name: str | None = None,
) -> QueryOutput:
    plan = execution.plan
    exports = [e for e in plan.exports.values() if e.export.vector_indexes]
    if export_name is not None:
        exports = [e for e in exports if e.name == export_name]
    if not exports:
        raise FlowDefinitionError(
            f"flow {execution.full_name!r} has no export with a vector index to query"
            + (f" named {export_name!r}" if export_name else "")
        )
    export = exports[0]
    index = export.export.vector_indexes[0]
    producer = _find_producer(execution.graph.root, export.export.collector.name, index.field_name)
    if producer is None or len(producer.args) != 1 or producer.kwargs:
        raise FlowDefinitionError(
            f"cannot tell how {export.name}.{index.field_name} was embedded (it must be collected "
            "straight from a one-argument transform such as SentenceTransformerEmbed)"
        )
    runner = _runner_for(execution, producer)
    store, _ = await execution.open_store(ctx)
    (vector,) = await runner.run([([text], {})], RowMemo(store))
    table = postgres_target.resolve_table(execution.full_name, export)
    columns = [c for c in [*export.key_fields, *export.value_fields] if c != index.field_name]
    pool = await ctx.pool()
    async with pool.acquire() as conn:
        rows = await postgres_target.similarity_search(
            conn,
            table,
            columns,
            index.field_name,
            _DISTANCE_OPERATOR[index.metric],
            vector,
            top_k,
        )
    results = []
    for row in rows:
        item = {c: _plain(row[c]) for c in columns}
        item["score"] = _score(index.metric, float(row["_distance"]))
        results.append(item)
    return QueryOutput(results, QueryInfo(embedding=vector, similarity_metric=index.metric))


def _runner_for(execution: FlowExecution, op: TransformOp) -> FunctionRunner:
    for source in execution.sources.values():
        runner = source.runners.get(id(op))
        if runner is not None:
            return runner
    raise FlowDefinitionError("the embedding transform is not reachable from any source")


def _plain(value: Any) -> Any:
    lower = getattr(value, "lower", None)
    upper = getattr(value, "upper", None)
    if lower is not None and upper is not None and not isinstance(value, str):
        return [lower, upper]
    return value
