"""The declarative flow API (records a graph, does no I/O), and v0's ``cocoindex.flow`` path.

v0 users write ``from cocoindex.flow import DataCollector, FlowBuilder, flow_def``. The
builder classes live here; ``flow_def``, ``transform_flow``, the live updater and the
``Flow`` handle live in :mod:`cocod.runtime`, a layer above. They are re-exported lazily
(resolved on first use), so importing ``cocod.flow`` from the engine never imports the
runtime and the layering of docs/architecture.md holds at import time.
"""

from __future__ import annotations

from cocod.flow.lazy import LazyExports

TYPE_CHECKING = False  # typing stays unloaded: `import cocod` (the thin CLI) imports this

if TYPE_CHECKING:
    from cocod.flow.builder import DataCollector, DataScope, DataSlice, FlowBuilder
    from cocod.flow.graph import GeneratedField
    from cocod.runtime.flow import (
        Flow,
        add_flow_def,
        drop_all_flows,
        ensure_all_flows_built,
        ensure_all_flows_built_async,
        flow_by_name,
        flow_def,
        flow_names,
        flows,
        get_flow_full_name,
        open_flow,
        remove_flow,
        setup_all_flows,
        update_all_flows,
        update_all_flows_async,
    )
    from cocod.runtime.live_updater import (
        FlowLiveUpdater,
        FlowLiveUpdaterOptions,
        FlowUpdaterStatusUpdates,
    )
    from cocod.runtime.transform_flow import TransformFlow, transform_flow

_LAZY = LazyExports(
    __name__,
    {
        "DataCollector": "cocod.flow.builder",
        "DataScope": "cocod.flow.builder",
        "DataSlice": "cocod.flow.builder",
        "FlowBuilder": "cocod.flow.builder",
        "GeneratedField": "cocod.flow.graph",
        "Flow": "cocod.runtime.flow",
        "add_flow_def": "cocod.runtime.flow",
        "drop_all_flows": "cocod.runtime.flow",
        "ensure_all_flows_built": "cocod.runtime.flow",
        "ensure_all_flows_built_async": "cocod.runtime.flow",
        "get_flow_full_name": "cocod.runtime.flow",
        "flow_by_name": "cocod.runtime.flow",
        "flow_def": "cocod.runtime.flow",
        "flow_names": "cocod.runtime.flow",
        "flows": "cocod.runtime.flow",
        "open_flow": "cocod.runtime.flow",
        "remove_flow": "cocod.runtime.flow",
        "setup_all_flows": "cocod.runtime.flow",
        "update_all_flows": "cocod.runtime.flow",
        "update_all_flows_async": "cocod.runtime.flow",
        "FlowLiveUpdater": "cocod.runtime.live_updater",
        "FlowLiveUpdaterOptions": "cocod.runtime.live_updater",
        "FlowUpdaterStatusUpdates": "cocod.runtime.live_updater",
        "TransformFlow": "cocod.runtime.transform_flow",
        "transform_flow": "cocod.runtime.transform_flow",
        "EvaluateAndDumpOptions": "cocod.runtime.evaluate",
    },
)
__getattr__ = _LAZY.attribute
__dir__ = _LAZY.dir


__all__ = [
    "DataCollector",
    "DataScope",
    "DataSlice",
    "EvaluateAndDumpOptions",
    "Flow",
    "FlowBuilder",
    "FlowLiveUpdater",
    "FlowLiveUpdaterOptions",
    "FlowUpdaterStatusUpdates",
    "GeneratedField",
    "TransformFlow",
    "add_flow_def",
    "drop_all_flows",
    "ensure_all_flows_built",
    "ensure_all_flows_built_async",
    "flow_by_name",
    "flow_def",
    "flow_names",
    "flows",
    "get_flow_full_name",
    "open_flow",
    "remove_flow",
    "setup_all_flows",
    "transform_flow",
    "update_all_flows",
    "update_all_flows_async",
]
