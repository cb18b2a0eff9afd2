"""Similarity queries over an export: embed the query text with the flow's own function.

The function that produced the indexed vector column is found by following the collected
field back to the transform that computed it, and its runner (with its already loaded
model and memo) embeds the query. No separate query-time configuration can drift.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import numpy as np

from cocod.engine.evaluator import FunctionRunner, RowMemo
from cocod.engine.plan import ExportPlan
from cocod.errors import FlowDefinitionError, SetupOutOfDateError
from cocod.executors import postgres
from cocod.executors.local_file import LocalFileReader
from cocod.flow.graph import CollectOp, FieldRef, ForEachOp, Scope, TransformOp
from cocod.flow.index import VectorIndexDef, VectorSimilarityMetric
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


@dataclass
class VectorTarget:
    """What a similarity query of one export needs: its table, its vector index and the
    runner of the function that embedded the indexed column (to embed the query alike)."""

    execution: FlowExecution
    export: ExportPlan
    index: VectorIndexDef
    runner: FunctionRunner
    table: postgres.TargetTable
    columns: list[str]
    """The export's columns other than the vector, in key-then-value order."""

    @property
    def metric(self) -> VectorSimilarityMetric:
        return self.index.metric

    @property
    def embedder_identity(self) -> str:
        """Equal for two targets whose query vectors are the same (same function, model,
        arguments): one embedding of the query text serves both."""
        return json.dumps(self.runner.function.identity_json(), sort_keys=True, default=repr)

    def reader_for_rows(self) -> LocalFileReader | None:
        """The reader of the local-file source whose rows feed this export (to read a hit's
        file), or None for other sources."""
        collector = self.export.export.collector.name
        for name, source in self.execution.plan.sources.items():
            if any(_collects_into(op.child, collector) for op in source.for_each):
                reader = self.execution.sources[name].reader
                return reader if isinstance(reader, LocalFileReader) else None
        return None


def resolve_vector_target(execution: FlowExecution, export_name: str | None = None) -> VectorTarget:
    """The first export with a vector index (or the one named), or FlowDefinitionError."""
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
    table = postgres.resolve_table(execution.full_name, export)
    columns = [c for c in [*export.key_fields, *export.value_fields] if c != index.field_name]
    return VectorTarget(execution, export, index, _runner_for(execution, producer), table, columns)


async def embed_query(target: VectorTarget, ctx: LibraryContext, text: str) -> Any:
    """The query's vector, computed by the flow's own runner (in its worker threads, with
    the process's one loaded copy of the model) and memoized like an indexed chunk."""
    store, _ = await target.execution.open_store(ctx)
    (vector,) = await target.runner.run([([text], {})], RowMemo(store))
    return vector


async def nearest_rows(
    target: VectorTarget, ctx: LibraryContext, vector: Any, top_k: int
) -> list[dict[str, Any]]:
    """The ``top_k`` rows nearest ``vector``, each with its ``score`` (see :func:`_score`)."""
    pool = await ctx.pool()
    async with pool.acquire() as conn:
        try:
            rows = await postgres.similarity_search(
                conn,
                target.table,
                target.columns,
                target.index.field_name,
                _DISTANCE_OPERATOR[target.metric],
                vector,
                top_k,
            )
        except asyncpg.UndefinedTableError:
            raise SetupOutOfDateError(
                f"flow {target.execution.full_name!r} has no table {target.table.qualified} "
                "yet; set it up first (`cocod setup NAME`, or flow.setup())"
            ) from None
    results = []
    for row in rows:
        item = {c: _plain(row[c]) for c in target.columns}
        item["score"] = _score(target.metric, float(row["_distance"]))
        results.append(item)
    return results


async def query_export(
    execution: FlowExecution,
    ctx: LibraryContext,
    text: str,
    *,
    top_k: int = 10,
    export_name: str | None = None,
) -> QueryOutput:
    target = resolve_vector_target(execution, export_name)
    vector = await embed_query(target, ctx, text)
    results = await nearest_rows(target, ctx, vector, top_k)
    return QueryOutput(results, QueryInfo(embedding=vector, similarity_metric=target.metric))


def _collects_into(scope: Scope, collector_name: str) -> bool:
    for op in scope.ops:
        if isinstance(op, CollectOp) and op.collector.name == collector_name:
            return True
        if isinstance(op, ForEachOp) and _collects_into(op.child, collector_name):
            return True
    return False


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
