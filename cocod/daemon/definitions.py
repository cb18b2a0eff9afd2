"""Turn ``"package.module:factory"`` plus params into a flow definition function.

One definition serves many instances: ``factory(params)`` returns the function that
defines the flow for those parameters. When the factory's parameter is annotated with a
dataclass, params are validated by building it (unknown or missing keys are errors that
name the instance); otherwise the factory receives the dict.

Importing the factory's module and calling it is user code: it may read files, import
torch or sleep. The daemon therefore calls :func:`load_definition_async`, which runs it in
a worker thread under a small limiter, so a slow import never stalls the event loop (and
with it the control socket and every other instance).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio

from cocod.errors import FlowDefinitionError

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
