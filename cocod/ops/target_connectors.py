"""Custom targets: v0's ``@op.target_connector``, its setup states and their JSON.

Decorating checks the connector class and reads the key and value types from its
``mutate`` annotation; :class:`TargetConnector` turns the connector's answers into what
setup records store (JSON) and the engine's row changes into ``mutate``'s arguments.
Running setup and writes (batches, retries, the row transaction) is
:mod:`cocod.executors.custom_target`'s job.
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
from typing import Any

from cocod.errors import FlowDefinitionError
from cocod.flow.specs import TargetSpec, register_target_connector, spec_to_json
from cocod.flow.types import to_python_value
from cocod.flow.value_type import FieldSchema, ValueType
from cocod.ops.connector_keys import key_to_python, positional_args, required_method


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
        fn = required_method(self.connector_cls, "get_persistent_key")
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
        required_method(cls, "get_persistent_key")
        required_method(cls, "apply_setup_change")
        key_ann, value_ann = _mutation_types(cls, required_method(cls, "mutate"))
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
