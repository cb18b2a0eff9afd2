"""Turn ``"package.module:factory"`` plus params into a flow definition function.

One definition serves many instances: ``factory(params)`` returns the function that
defines the flow for those parameters. When the factory's parameter is annotated with a
dataclass, params are validated by building it (unknown or missing keys are errors that
name the instance); otherwise the factory receives the dict.

Importing the factory's module and calling it is user code: it may read files, import
torch or sleep. The daemon therefore calls :func:`load_definition_async`, which runs it in
a worker thread under a small limiter, so a slow import never stalls the event loop (and
with it the control socket and every other instance).

The built-in flows (:mod:`cocod.flows`) are named like any other factory,
``definition = "cocod.flows:code"`` or ``"cocod.flows:text"``; :func:`builtin_instance`
builds such an instance's config for ``cocod add NAME --path DIR [--flow code|text]``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import sys
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio

from cocod.control.protocol import ErrorCode, ProtocolError
from cocod.daemon.config import InstanceConfig
from cocod.errors import FlowDefinitionError, NamingError
from cocod.flow.naming import (
    MAX_PG_IDENTIFIER_BYTES,
    validate_flow_name,
    validate_sql_identifier,
)

FlowDef = Callable[..., None]

_USER_CODE_LIMITER: anyio.CapacityLimiter | None = None


def user_code_limiter() -> anyio.CapacityLimiter:
    """Worker threads for user code (factory imports, definition building), shared."""
    global _USER_CODE_LIMITER
    if _USER_CODE_LIMITER is None:
        _USER_CODE_LIMITER = anyio.CapacityLimiter(4)
    return _USER_CODE_LIMITER


async def load_definition_async(
    definition: str, params: Mapping[str, Any], base_dir: Path | None, instance: str
) -> FlowDef:
    """:func:`load_definition` in a worker thread; cancelling abandons the thread."""
    return await anyio.to_thread.run_sync(
        load_definition,
        definition,
        params,
        base_dir,
        instance,
        limiter=user_code_limiter(),
        abandon_on_cancel=True,
    )


def load_definition(
    definition: str, params: Mapping[str, Any], base_dir: Path | None, instance: str
) -> FlowDef:
    module_name, _, attr = definition.partition(":")
    if not module_name or not attr:
        raise FlowDefinitionError(
            f"instance {instance!r}: definition {definition!r} must look like "
            "'package.module:factory'"
        )
    if base_dir is not None and str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise FlowDefinitionError(
            f"instance {instance!r}: cannot import {module_name!r}: {e}"
        ) from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise FlowDefinitionError(
            f"instance {instance!r}: {module_name!r} has no callable {attr!r}"
        )
    argument = _build_argument(factory, params, instance)
    fl_def = factory(argument)
    if not callable(fl_def):
        raise FlowDefinitionError(
            f"instance {instance!r}: {definition}(params) must return a flow definition "
            f"function, got {type(fl_def).__name__}"
        )
    return fl_def  # type: ignore[no-any-return]


def _build_argument(factory: Callable[..., Any], params: Mapping[str, Any], instance: str) -> Any:
    parameters = list(inspect.signature(factory).parameters.values())
    if not parameters:
        if params:
            raise FlowDefinitionError(f"instance {instance!r}: the factory takes no params")
        return None
    try:
        hints = typing.get_type_hints(factory)
    except Exception:
        hints = {}
    annotation = hints.get(parameters[0].name)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        fields = {f.name: f for f in dataclasses.fields(annotation)}
        unknown = set(params) - set(fields)
        if unknown:
            raise FlowDefinitionError(
                f"instance {instance!r}: unknown param(s) {', '.join(sorted(unknown))} for "
                f"{annotation.__name__} (expected: {', '.join(fields)})"
            )
        try:
            return annotation(**params)
        except TypeError as e:
            raise FlowDefinitionError(f"instance {instance!r}: bad params: {e}") from None
    return dict(params)


BUILTIN_FLOWS = {"code": "cocod.flows:code", "text": "cocod.flows:text"}
TABLE_SUFFIX = "__chunks"


def table_name_for(instance: str) -> str:
    """A safe Postgres table name from an instance name: ``My-Notes`` → ``my_notes__chunks``.

    Lower case (no quoting surprises in psql), runs of other characters become one ``_``,
    a leading digit gets a ``t_`` prefix, and the whole fits Postgres' 63-byte limit.
    """
    base = re.sub(r"[^a-z0-9_]+", "_", instance.lower()).strip("_") or "instance"
    if base[0].isdigit():
        base = f"t_{base}"
    base = base[: MAX_PG_IDENTIFIER_BYTES - len(TABLE_SUFFIX)].rstrip("_")
    return validate_sql_identifier(base + TABLE_SUFFIX, "table name")


def builtin_instance(
    name: str,
    path: str | Path,
    flow: str = "text",
    live: bool = True,
    params: Mapping[str, Any] | None = None,
) -> InstanceConfig:
    """The config of an instance of a built-in flow over the folder ``path`` (blocking:
    it checks the folder; call it in a worker thread)."""
    try:
        validate_flow_name(name)
    except (NamingError, ValueError) as e:
        raise ProtocolError(ErrorCode.BAD_ARGS, str(e)) from None
    if flow not in BUILTIN_FLOWS:
        raise ProtocolError(
            ErrorCode.BAD_ARGS,
            f"unknown built-in flow {flow!r}: choose one of {', '.join(BUILTIN_FLOWS)}",
        )
    folder = Path(path).expanduser()
    if not folder.is_absolute():
        raise ProtocolError(
            ErrorCode.BAD_ARGS, f"--path {str(path)!r} must be absolute (the client resolves it)"
        )
    if not folder.is_dir():
        raise ProtocolError(
            ErrorCode.BAD_ARGS, f"--path {str(folder)!r} is not a folder; create it or fix it"
        )
    merged: dict[str, Any] = {"path": str(folder), "table": table_name_for(name)}
    merged.update(params or {})
    return InstanceConfig(name, BUILTIN_FLOWS[flow], merged, live)
