"""Custom ops (``cocoindex.op`` in v0): functions, sources and targets users write."""

from cocod.flow.specs import FunctionSpec, SourceSpec, TargetSpec
from cocod.ops.connectors import (
    NO_ORDINAL,
    NON_EXISTENCE,
    IndexOptions,
    PartialSourceRow,
    PartialSourceRowData,
    SourceReadOptions,
    TargetStateCompatibility,
    source_connector,
    target_connector,
)
from cocod.ops.op import ArgRelationship, OpArgs, executor_class, function

__all__ = [
    "NON_EXISTENCE",
    "NO_ORDINAL",
    "ArgRelationship",
    "FunctionSpec",
    "IndexOptions",
    "OpArgs",
    "PartialSourceRow",
    "PartialSourceRowData",
    "SourceReadOptions",
    "SourceSpec",
    "TargetSpec",
    "TargetStateCompatibility",
    "executor_class",
    "function",
    "source_connector",
    "target_connector",
]
