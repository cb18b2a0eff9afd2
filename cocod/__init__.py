"""cocod: keep Postgres + pgvector indexes in sync with folders of documents and code.

A drop-in for CocoIndex v0's Python API (``import cocod as cocoindex``). This module only
re-exports, and lazily: ``import cocod`` costs nothing until a name is used, so the
``cocod`` CLI can talk to the daemon without importing asyncpg or torch. It never imports
the daemon.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cocod import (
        auth_registry,
        flow,
        flow_instances,
        functions,
        index,
        lib,
        llm,
        op,
        query_handler,
        setting,
        sources,
        storages,
        targets,
        typing,
        utils,
    )
    from cocod.auth_registry import (
        AuthEntryReference,
        add_auth_entry,
        add_transient_auth_entry,
        ref_auth_entry,
    )
    from cocod.engine.stats import IndexUpdateInfo
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
    from cocod.flow_instances import FlowInstances
    from cocod.lib import start_server
    from cocod.llm import LlmApiType, LlmSpec
    from cocod.runtime.context import get_app_namespace, init, settings, stop
    from cocod.runtime.evaluate import EvaluateAndDumpOptions
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
    from cocod.setting import (
        DatabaseConnectionSpec,
        GlobalExecutionOptions,
        ServerSettings,
        Settings,
    )

__version__ = "0.1.0"

_SUBMODULES = frozenset(
    {
        "auth_registry",
        "errors",
        "flow",
        "flow_instances",
        "functions",
        "index",
        "lib",
        "llm",
        "op",
        "query_handler",
        "setting",
        "sources",
        "storages",
        "targets",
        "typing",
        "utils",
    }
)
_LAZY = {
    "AuthEntryReference": "cocod.auth_registry",
    "add_auth_entry": "cocod.auth_registry",
    "add_transient_auth_entry": "cocod.auth_registry",
    "ref_auth_entry": "cocod.auth_registry",
    "EvaluateAndDumpOptions": "cocod.runtime.evaluate",
    "FlowInstances": "cocod.flow_instances",
    "start_server": "cocod.lib",
    "LlmApiType": "cocod.llm",
    "LlmSpec": "cocod.llm",
    "IndexUpdateInfo": "cocod.engine.stats",
    "DataCollector": "cocod.flow.builder",
    "DataScope": "cocod.flow.builder",
    "DataSlice": "cocod.flow.builder",
    "FlowBuilder": "cocod.flow.builder",
    "GeneratedField": "cocod.flow.graph",
    "FtsIndexDef": "cocod.flow.index",
    "HnswVectorIndexMethod": "cocod.flow.index",
    "IndexOptions": "cocod.flow.index",
    "IvfFlatVectorIndexMethod": "cocod.flow.index",
    "VectorIndexDef": "cocod.flow.index",
    "VectorSimilarityMetric": "cocod.flow.index",
    "Float32": "cocod.flow.types",
    "Float64": "cocod.flow.types",
    "Int64": "cocod.flow.types",
    "Json": "cocod.flow.types",
    "LocalDateTime": "cocod.flow.types",
    "OffsetDateTime": "cocod.flow.types",
    "Range": "cocod.flow.types",
    "Vector": "cocod.flow.types",
    "get_app_namespace": "cocod.runtime.context",
    "init": "cocod.runtime.context",
    "settings": "cocod.runtime.context",
    "stop": "cocod.runtime.context",
    "Flow": "cocod.runtime.flow",
    "add_flow_def": "cocod.runtime.flow",
    "drop_all_flows": "cocod.runtime.flow",
    "ensure_all_flows_built": "cocod.runtime.flow",
    "flow_by_name": "cocod.runtime.flow",
    "flow_def": "cocod.runtime.flow",
    "flow_names": "cocod.runtime.flow",
    "flows": "cocod.runtime.flow",
    "open_flow": "cocod.runtime.flow",
    "remove_flow": "cocod.runtime.flow",
    "setup_all_flows": "cocod.runtime.flow",
    "update_all_flows_async": "cocod.runtime.flow",
    "FlowLiveUpdater": "cocod.runtime.live_updater",
    "FlowLiveUpdaterOptions": "cocod.runtime.live_updater",
    "FlowUpdaterStatusUpdates": "cocod.runtime.live_updater",
    "QueryHandlerResultFields": "cocod.runtime.query",
    "QueryInfo": "cocod.runtime.query",
    "QueryOutput": "cocod.runtime.query",
    "TransformFlow": "cocod.runtime.transform_flow",
    "transform_flow": "cocod.runtime.transform_flow",
    "DatabaseConnectionSpec": "cocod.setting",
    "GlobalExecutionOptions": "cocod.setting",
    "ServerSettings": "cocod.setting",
    "Settings": "cocod.setting",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"cocod.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cocod' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES, *_LAZY])


__all__ = [
    "AuthEntryReference",
    "DataCollector",
    "DataScope",
    "DataSlice",
    "DatabaseConnectionSpec",
    "EvaluateAndDumpOptions",
    "Float32",
    "Float64",
    "Flow",
    "FlowBuilder",
    "FlowInstances",
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
    "LlmApiType",
    "LlmSpec",
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
    "add_auth_entry",
    "add_flow_def",
    "add_transient_auth_entry",
    "auth_registry",
    "drop_all_flows",
    "ensure_all_flows_built",
    "flow",
    "flow_by_name",
    "flow_def",
    "flow_instances",
    "flow_names",
    "flows",
    "functions",
    "get_app_namespace",
    "index",
    "init",
    "lib",
    "llm",
    "op",
    "open_flow",
    "query_handler",
    "ref_auth_entry",
    "remove_flow",
    "setting",
    "settings",
    "setup_all_flows",
    "sources",
    "start_server",
    "stop",
    "storages",
    "targets",
    "transform_flow",
    "typing",
    "update_all_flows_async",
    "utils",
]
