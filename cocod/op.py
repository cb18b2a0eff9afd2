"""Custom ops (``cocoindex.op`` in v0)."""

from cocod.flow.specs import FunctionSpec, SourceSpec, TargetSpec
from cocod.ops.op import ArgRelationship, OpArgs, executor_class, function

__all__ = [
    "ArgRelationship",
    "FunctionSpec",
    "OpArgs",
    "SourceSpec",
    "TargetSpec",
    "executor_class",
    "function",
]
