"""v0's ``cocoindex.query_handler``: what a query handler returns and how it is described.

The result types live with the query code in :mod:`cocod.runtime.query`; this module is
v0's import path for them. ``QueryHandlerInfo`` (v0 passes it to CocoInsight, which cocod
does not have) is accepted for source compatibility.
"""

from __future__ import annotations

from dataclasses import dataclass

from cocod.runtime.query import QueryHandlerResultFields, QueryInfo, QueryOutput


@dataclass
class QueryHandlerInfo:
    """How a query handler's results are laid out (v0: a hint for CocoInsight)."""

    result_fields: QueryHandlerResultFields | None = None


__all__ = ["QueryHandlerInfo", "QueryHandlerResultFields", "QueryInfo", "QueryOutput"]
