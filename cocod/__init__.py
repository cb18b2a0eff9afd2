"""cocod: keep Postgres + pgvector indexes in sync with folders of documents and code.

A drop-in for CocoIndex v0's Python API (``import cocod as cocoindex``). This module only
re-exports; it never imports the daemon.
"""

from cocod import functions, op, sources, storages, targets, typing, utils
from cocod.engine.stats import IndexUpdateInfo
from cocod.executors import functions as _builtin_functions  # registers built-in ops
from cocod.flow.builder import DataCollector, DataScope, DataSlice, FlowBuilder
from cocod.flow.graph import GeneratedField
from cocod.flow.index import (
    FtsIndexDef,
    HnswVectorIndexMethod,
    IndexOptions,
    IvfFlatVectorIndexMethod,
    VectorIndexDef,
    VectorSimilarityMetric,
)
from cocod.flow.types import (
    Float32,
    Float64,
    Int64,
    Json,
    LocalDateTime,
    OffsetDateTime,
    Range,
    Vector,
)
from cocod.runtime.context import get_app_namespace, init, settings, stop
from cocod.runtime.flow import (
    Flow,
    add_flow_def,
    drop_all_flows,
    ensure_all_flows_built,
    flow_by_name,
    flow_def,
    flow_names,
    flows,
    open_flow,
    remove_flow,
    setup_all_flows,
    update_all_flows_async,
)
from cocod.runtime.live_updater import (
    FlowLiveUpdater,
    FlowLiveUpdaterOptions,
    FlowUpdaterStatusUpdates,
)
from cocod.runtime.query import QueryHandlerResultFields, QueryInfo, QueryOutput
from cocod.runtime.transform_flow import TransformFlow, transform_flow
from cocod.settings import (
    DatabaseConnectionSpec,
    GlobalExecutionOptions,
    ServerSettings,
    Settings,
)

del _builtin_functions

__version__ = "0.1.0"

__all__ = [
    "DataCollector",
    "DataScope",
    "DataSlice",
    "DatabaseConnectionSpec",
    "Float32",
    "Float64",
    "Flow",
    "FlowBuilder",
    "FlowLiveUpdater",
    "FlowLiveUpdaterOptions",
    "FlowUpdaterStatusUpdates",
    "FtsIndexDef",
    "GeneratedField",
    "GlobalExecutionOptions",
    "HnswVectorIndexMethod",
    "IndexOptions",
    "IndexUpdateInfo",
    "Int64",
    "IvfFlatVectorIndexMethod",
    "Json",
    "LocalDateTime",
    "OffsetDateTime",
    "QueryHandlerResultFields",
    "QueryInfo",
    "QueryOutput",
    "Range",
    "ServerSettings",
    "Settings",
    "TransformFlow",
    "Vector",
    "VectorIndexDef",
    "VectorSimilarityMetric",
    "add_flow_def",
    "drop_all_flows",
    "ensure_all_flows_built",
    "flow_by_name",
    "flow_def",
    "flow_names",
    "flows",
    "functions",
    "get_app_namespace",
    "init",
    "op",
    "open_flow",
    "remove_flow",
    "settings",
    "setup_all_flows",
    "sources",
    "stop",
    "storages",
    "targets",
    "transform_flow",
    "typing",
    "update_all_flows_async",
    "utils",
]
