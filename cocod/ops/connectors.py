"""Custom sources and targets: v0's ``@op.source_connector`` and ``@op.target_connector``.

This module only *defines*: it checks a connector class when it is decorated (so a wrong
signature fails at import, as in v0), maps its key and value types to engine types, and
converts values between what user code sees (dataclasses, NamedTuples, plain values) and
engine values. Calling the connector (threads, retries, the row transaction) is the
executors' job: :mod:`cocod.executors.custom_source`, :mod:`cocod.executors.custom_target`.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from cocod.errors import FlowDefinitionError
from cocod.flow.specs import (
    SourceSpec,
    TargetSpec,
    register_source_connector,
    register_target_connector,
    spec_to_json,
)
from cocod.flow.types import (
    KEY_KINDS,
    FieldSchema,
    ValueType,
    struct,
    to_engine_value,
    to_python_value,
    type_of_annotation,
)

K = TypeVar("K")
V = TypeVar("V")

KEY_FIELD_NAME = "_key"
"""The key field of a source whose key type is a plain type (v0's name)."""
NON_EXISTENCE: Literal["NON_EXISTENCE"] = "NON_EXISTENCE"
NO_ORDINAL: Literal["NO_ORDINAL"] = "NO_ORDINAL"


@dataclass
class SourceReadOptions:
    """Hints to ``list()`` / ``get_value()`` about what the engine needs now (v0's)."""

    include_ordinal: bool = False
    include_content_version_fp: bool = False
    include_value: bool = False


@dataclass
class PartialSourceRowData(Generic[V]):
    value: V | Literal["NON_EXISTENCE"] | None = None
    ordinal: int | Literal["NO_ORDINAL"] | None = None
    content_version_fp: bytes | None = None


@dataclass
class PartialSourceRow(Generic[K, V]):
    key: K
    data: PartialSourceRowData[V]


class TargetStateCompatibility(enum.Enum):
    """What a changed setup state means for the rows already exported (v0's values).

    COMPATIBLE: nothing to do for the data. PARTIALLY_COMPATIBLE: ``apply_setup_change`` is
    called, rows stay. NOT_COMPATIBLE: ``apply_setup_change`` is called and every row is
    exported again (the old rows are the connector's to clear in that call).
    """

    COMPATIBLE = "Compatible"
    PARTIALLY_COMPATIBLE = "PartialCompatible"
    NOT_COMPATIBLE = "NotCompatible"


@dataclass(frozen=True)
class IndexOptions:
    """What ``get_setup_state`` / ``prepare`` may ask for besides the spec (v0's)."""

    primary_key_fields: tuple[str, ...]
    vector_indexes: tuple[Any, ...] = ()
    fts_indexes: tuple[Any, ...] = ()


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


def _required(cls: type, name: str) -> Callable[..., Any]:
    method = getattr(cls, name, None)
    if not callable(method):
        raise FlowDefinitionError(f"connector class {cls.__name__} needs a {name}() method")
    return method  # type: ignore[no-any-return]


def _key_fields(key_type: Any, what: str) -> tuple[FieldSchema, ...]:
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


# -- sources ----------------------------------------------------------------------------------


@dataclass
class SourceConnector:
    """A registered ``@source_connector``: its class, and the row type its specs produce."""

    spec_cls: type
    connector_cls: type
    key_annotation: Any
    key_fields: tuple[FieldSchema, ...]
    value_type: ValueType
    row_type: ValueType
    num_key_parts: int

    def value_to_engine(self, key_parts: list[Any], value: Any) -> dict[str, Any]:
        """The row as the flow sees it: key fields first, then the value's fields."""
        row = dict(zip((f.name for f in self.key_fields), key_parts, strict=True))
        row.update(to_engine_value(value, self.value_type))
        return row


def source_connector(
    *, spec_cls: type, key_type: Any = Any, value_type: Any = Any
) -> Callable[[type], type]:
    """Register a class that lists and reads the rows of ``spec_cls`` sources."""
    if not (isinstance(spec_cls, type) and issubclass(spec_cls, SourceSpec)):
        raise FlowDefinitionError(
            f"source_connector: spec_cls must be a SourceSpec, got {spec_cls}"
        )
    what = f"source connector for {spec_cls.__name__}"
    if key_type is Any:
        raise FlowDefinitionError(f"{what}: pass key_type= (the type of each row's key)")
    if value_type is Any:
        raise FlowDefinitionError(f"{what}: pass value_type= (a dataclass of the row's fields)")

    def decorate(cls: type) -> type:
        for name in ("create", "list", "get_value"):
            _required(cls, name)
        key_fields = _key_fields(key_type, what)
        vtype = type_of_annotation(value_type)
        if vtype.kind != "Struct":
            raise FlowDefinitionError(
                f"{what}: value_type must be a dataclass or NamedTuple, got {value_type!r}"
            )
        clash = {f.name for f in key_fields} & {f.name for f in vtype.fields}
        if clash:
            raise FlowDefinitionError(f"{what}: key and value both have field(s) {sorted(clash)}")
        row = struct([(f.name, f.type) for f in (*key_fields, *vtype.fields)], python_type=None)
        register_source_connector(
            spec_cls,
            SourceConnector(spec_cls, cls, key_type, key_fields, vtype, row, len(key_fields)),
        )
        return cls

    return decorate


# -- targets ----------------------------------------------------------------------------------


@dataclass
class TargetConnector:
    """A registered ``@target_connector`` and the conversions its methods need."""

    spec_cls: type
    connector_cls: type
    persistent_key_type: Any
    setup_state_cls: type
    key_annotation: Any
    value_annotation: Any

    @property
    def name(self) -> str:
        return self.spec_cls.__name__

    def method(self, name: str) -> Callable[..., Any] | None:
        found = getattr(self.connector_cls, name, None)
        return found if callable(found) else None

    def persistent_key(self, spec: Any, target_name: str) -> Any:
        fn = _required(self.connector_cls, "get_persistent_key")
        key = to_json(fn(*positional_args(fn, spec=spec, target_name=target_name)))
        _check_json(key, f"{self.name}.get_persistent_key()")
        return key

    def setup_state(self, spec: Any, key_fields: Any, value_fields: Any, index: Any) -> Any:
        """The JSON of the state setup records (the spec itself unless get_setup_state)."""
        fn = self.method("get_setup_state")
        state = (
            spec
            if fn is None
            else fn(
                *positional_args(
                    fn,
                    spec=spec,
                    key_fields_schema=key_fields,
                    value_fields_schema=value_fields,
                    index_options=index,
                )
            )
        )
        if not isinstance(state, self.setup_state_cls):
            raise FlowDefinitionError(
                f"target connector {self.name}: the setup state must be a "
                f"{self.setup_state_cls.__name__}, got {type(state).__name__}"
            )
        data = to_json(state)
        _check_json(data, f"{self.name} setup state")
        return data

    def load_key(self, data: Any) -> Any:
        return from_json(data, self.persistent_key_type)

    def load_state(self, data: Any) -> Any:
        return None if data is None else from_json(data, self.setup_state_cls)

    def describe(self, key_data: Any) -> str:
        fn = self.method("describe")
        key = self.load_key(key_data)
        return str(fn(key)) if fn is not None else f"{self.name} {key}"

    def compatibility(self, desired: Any, existing: Any) -> TargetStateCompatibility:
        fn = self.method("check_state_compatibility")
        if fn is None:
            return (
                TargetStateCompatibility.COMPATIBLE
                if desired == existing
                else TargetStateCompatibility.PARTIALLY_COMPATIBLE
            )
        result = fn(self.load_state(desired), self.load_state(existing))
        return TargetStateCompatibility(result)

    def mutation(
        self,
        prepared: Any,
        key_fields: tuple[FieldSchema, ...],
        value_type: ValueType,
        changes: list[tuple[list[Any], dict[str, Any] | None]],
    ) -> tuple[Any, dict[Any, Any]]:
        """One ``(prepared spec, {key: value or None})`` argument of ``mutate``."""
        out: dict[Any, Any] = {}
        for parts, row in changes:
            key = key_to_python(parts, self.key_annotation, key_fields)
            out[key] = (
                None
                if row is None
                else to_python_value(
                    {f.name: row.get(f.name) for f in value_type.fields},
                    self.value_annotation,
                    value_type,
                )
            )
        return prepared, out


def _mutation_types(cls: type, mutate: Callable[..., Any]) -> tuple[Any, Any]:
    """(key, value) annotations from ``mutate(*all_mutations: tuple[S, dict[K, V | None]])``."""
    params = list(inspect.signature(mutate).parameters.values())
    if len(params) != 1 or params[0].kind != inspect.Parameter.VAR_POSITIONAL:
        raise FlowDefinitionError(
            f"{cls.__name__}.mutate must take exactly one *args parameter: "
            "mutate(*all_mutations: tuple[Spec, dict[Key, Value | None]])"
        )
    try:
        hints = typing.get_type_hints(mutate)
    except Exception:  # an unresolvable forward reference: treat as unannotated
        hints = {}
    annotation = hints.get(params[0].name, Any)
    if annotation is Any:
        return Any, Any
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple and len(args) == 2:
        mapping = args[1]
        if mapping is Any:
            return Any, Any
        if typing.get_origin(mapping) is dict and len(typing.get_args(mapping)) == 2:
            key, value = typing.get_args(mapping)
            members = [a for a in typing.get_args(value) if a is not type(None)]
            if typing.get_origin(value) in (typing.Union, types.UnionType):
                value = members[0] if len(members) == 1 else Any
            return key, value
    raise FlowDefinitionError(
        f"{cls.__name__}.mutate: annotate *all_mutations as tuple[Spec, dict[Key, Value | None]] "
        f"(got {annotation!r})"
    )


def target_connector(
    *, spec_cls: type, persistent_key_type: Any = Any, setup_state_cls: type | None = None
) -> Callable[[type], type]:
    """Register a class that sets up and writes ``spec_cls`` targets."""
    if not (isinstance(spec_cls, type) and issubclass(spec_cls, TargetSpec)):
        raise FlowDefinitionError(
            f"target_connector: spec_cls must be a TargetSpec, got {spec_cls}"
        )

    def decorate(cls: type) -> type:
        _required(cls, "get_persistent_key")
        _required(cls, "apply_setup_change")
        key_ann, value_ann = _mutation_types(cls, _required(cls, "mutate"))
        register_target_connector(
            spec_cls,
            TargetConnector(
                spec_cls, cls, persistent_key_type, setup_state_cls or spec_cls, key_ann, value_ann
            ),
        )
        return cls

    return decorate


# -- JSON of keys and states ------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """Keys and setup states as setup records store them (v0: ``dump_engine_object``)."""
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: to_json(v) for k, v in value._asdict().items()}
    return spec_to_json(value)


def from_json(data: Any, cls: Any) -> Any:
    """Rebuild a dataclass / NamedTuple from its JSON; anything else is returned as is."""
    if not isinstance(data, dict) or not isinstance(cls, type):
        return data
    if dataclasses.is_dataclass(cls) or (issubclass(cls, tuple) and hasattr(cls, "_fields")):
        hints = typing.get_type_hints(cls)
        return cls(**{k: from_json(v, hints.get(k, Any)) for k, v in data.items() if k in hints})
    return data


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as e:
        raise FlowDefinitionError(f"{what} must be JSON-serialisable: {e}") from None


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
    "source_connector",
    "target_connector",
]
