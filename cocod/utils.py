"""Helpers of v0's ``cocoindex.utils``."""

from __future__ import annotations

from cocod.flow.naming import sanitize_name
from cocod.runtime.flow import Flow


def get_target_default_name(flow: Flow, target_name: str, delimiter: str = "__") -> str:
    """The default target (table) name v0 computes: ``<full flow name>__<target>``, sanitised.

    Postgres folds it to lower case; cocod creates the table under the lower-case name.
    """
    return sanitize_name(flow.full_name + delimiter + target_name)


get_target_storage_default_name = get_target_default_name
"""v0's deprecated name of :func:`get_target_default_name`, kept for unchanged v0 apps."""

__all__ = ["get_target_default_name", "get_target_storage_default_name"]
