"""Custom sources and targets: v0's ``@op.source_connector`` and ``@op.target_connector``.

These modules only *define*: they check a connector class when it is decorated (so a
wrong signature fails at import, as in v0), map its key and value types to engine types,
and convert values between what user code sees (dataclasses, NamedTuples, plain values)
and engine values. The sides live in :mod:`cocod.ops.source_connectors`,
:mod:`cocod.ops.target_connectors` and, for what both share (keys, method calls),
:mod:`cocod.ops.connector_keys`; this module gathers the names ``cocod.op`` and the
executors import. Calling the connector (threads, retries, the row transaction) is the
executors' job: :mod:`cocod.executors.custom_source`, :mod:`cocod.executors.custom_target`.
"""

from __future__ import annotations

from cocod.ops.connector_keys import (
    key_to_engine,
    key_to_python,
    positional_args,
)
from cocod.ops.source_connectors import (
    NO_ORDINAL,
    NON_EXISTENCE,
    PartialSourceRow,
    PartialSourceRowData,
    SourceConnector,
    SourceReadOptions,
    source_connector,
)
from cocod.ops.target_connectors import (
    IndexOptions,
    TargetConnector,
    TargetStateCompatibility,
    target_connector,
)

__all__ = [
    "NON_EXISTENCE",
    "NO_ORDINAL",
    "IndexOptions",
    "PartialSourceRow",
    "PartialSourceRowData",
    "SourceConnector",
    "SourceReadOptions",
    "TargetConnector",
    "TargetStateCompatibility",
    "key_to_engine",
    "key_to_python",
    "positional_args",
    "source_connector",
    "target_connector",
]
