"""Flow factories the daemon tests name in their config files."""

from __future__ import annotations

from dataclasses import dataclass

import cocod as cocoindex
from tests.flows import paragraph_flow


@dataclass
class Params:
    source_path: str
    table: str
    fail: bool = False


def factory(params: Params):  # type: ignore[no-untyped-def]
    if params.fail:
        raise RuntimeError(f"this definition is broken on purpose ({params.table})")
    return paragraph_flow(params.source_path, table_name=params.table)


def dict_factory(params: dict):  # type: ignore[no-untyped-def, type-arg]
    """A factory whose parameter is not a dataclass receives the params as a dict."""
    return paragraph_flow(str(params["source_path"]), table_name=str(params["table"]))


__all__ = ["Params", "cocoindex", "dict_factory", "factory"]
