"""What custom sources and targets share: their keys, and how their methods are called.

A connector's key is a plain value (``str``, ``int``) or a NamedTuple / dataclass of key
parts; the engine sees a list of parts, the user's methods see the key as they declared
it. v0 also lets a connector method leave out trailing parameters it does not need. Both
sides (``source_connectors``, ``target_connectors``) rely on these rules, so they are
written once here.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from cocod.errors import FlowDefinitionError
from cocod.flow.types import to_engine_value, to_python_value, type_of_annotation
from cocod.flow.value_type import KEY_KINDS, FieldSchema, struct

KEY_FIELD_NAME = "_key"
"""The key field of a source whose key type is a plain type (v0's name)."""


def positional_args(method: Callable[..., Any], **values: Any) -> list[Any]:
    """The leading ``values`` the method takes, in order: v0 lets users omit trailing ones.

    ``get_value(self, key)`` and ``get_value(self, key, options)`` are both valid.
    """
    params = list(inspect.signature(method).parameters.values())
    for p in params:
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            raise FlowDefinitionError(
                f"{getattr(method, '__qualname__', method)}: parameter {p.name!r} must be "
                "positional (custom connector methods take positional arguments only)"
            )
    return list(values.values())[: len(params)]


def required_method(cls: type, name: str) -> Callable[..., Any]:
    method = getattr(cls, name, None)
    if not callable(method):
        raise FlowDefinitionError(f"connector class {cls.__name__} needs a {name}() method")
    return method  # type: ignore[no-any-return]


def key_fields_of(key_type: Any, what: str) -> tuple[FieldSchema, ...]:
    vtype = type_of_annotation(key_type)
    fields = vtype.fields if vtype.kind == "Struct" else (FieldSchema(KEY_FIELD_NAME, vtype),)
    for f in fields:
        if f.type.kind not in KEY_KINDS:
            raise FlowDefinitionError(
                f"{what}: key field {f.name!r} has type {f.type.describe()}, which cannot be "
                f"a key (use one of {', '.join(sorted(KEY_KINDS))})"
            )
    return fields


def _is_plain_key(annotation: Any) -> bool:
    """A single-part key users see as the value itself (``str``, ``int``), not a struct."""
    return annotation is Any or type_of_annotation(annotation).kind != "Struct"


def key_to_python(parts: list[Any], annotation: Any, fields: tuple[FieldSchema, ...]) -> Any:
    """Engine key parts → the key users see (a plain value, a NamedTuple, a dataclass)."""
    if len(fields) == 1 and _is_plain_key(annotation):
        return parts[0]
    if annotation is Any:
        return tuple(parts)  # dict keys must be hashable
    row = dict(zip((f.name for f in fields), parts, strict=True))
    return to_python_value(row, annotation, struct([(f.name, f.type) for f in fields]))


def key_to_engine(key: Any, fields: tuple[FieldSchema, ...]) -> list[Any]:
    if len(fields) == 1 and not (
        dataclasses.is_dataclass(key) or (isinstance(key, tuple) and hasattr(key, "_fields"))
    ):
        return [to_engine_value(key, fields[0].type)]
    if isinstance(key, tuple) and not hasattr(key, "_fields"):
        values = dict(zip((f.name for f in fields), key, strict=True))
    else:
        values = to_engine_value(key, struct([(f.name, f.type) for f in fields]))
    return [values.get(f.name) for f in fields]
