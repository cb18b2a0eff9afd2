"""Base classes of op specs and the registry that gives each function spec its meaning.

Specs are plain dataclasses of parameters written by users. The flow layer needs each
function's output type while the flow is being defined (v0 type-checks eagerly), but must
not import executors (model loading, drivers). So executors register a
:class:`FunctionDefinition` per spec class here, and the flow builder looks it up.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, dataclass_transform

from cocod.errors import FlowDefinitionError
from cocod.flow.types import ValueType


def spec_to_json(value: Any) -> Any:
    """Canonical JSON of a spec: dataclass fields in order, ``None`` fields omitted.

    Omitting ``None`` keeps fingerprints stable when a new optional parameter is added.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: spec_to_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not None
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): spec_to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [spec_to_json(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


@dataclass_transform()
class _AutoDataclass:
    """Subclasses become dataclasses automatically, like v0's spec classes."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__dataclass_fields__" not in cls.__dict__:
            dataclass(cls)


class SourceSpec(_AutoDataclass):
    """Parameters of a source. ``row_schema`` names the rows it produces.

    Built-in sources override ``row_schema``; a custom source's schema comes from the
    ``@op.source_connector`` registered for its class (its key and value types).
    """

    def row_schema(self) -> tuple[ValueType, int]:
        """The row struct type and how many leading fields form the key."""
        connector = source_connector_for(self)
        if connector is None:
            raise FlowDefinitionError(
                f"no source connector is registered for source spec {type(self).__name__}; "
                f"define one with @cocod.op.source_connector(spec_cls={type(self).__name__}, "
                "key_type=..., value_type=...)"
            )
        return connector.row_type, connector.num_key_parts

    @classmethod
    def kind(cls) -> str:
        return cls.__name__


class FunctionSpec(_AutoDataclass):
    """Parameters of a function op; its behaviour is registered by an executor."""

    @classmethod
    def kind(cls) -> str:
        return cls.__name__


class TargetSpec(_AutoDataclass):
    """Parameters of an export target."""

    @classmethod
    def kind(cls) -> str:
        return cls.__name__


@dataclass(frozen=True)
class ArgSchema:
    """What the analyzer knows about one input: its type, and its value if constant."""

    type: ValueType
    is_constant: bool = False
    value: Any = None


@dataclass(frozen=True)
class OpOptions:
    cache: bool = False
    behavior_version: int | None = None
    batching: bool = False
    max_batch_size: int | None = None
    gpu: bool = False


class FunctionExecutor(Protocol):
    """Runs a function. Non-batching: one call per row. Batching: a list in, a list out."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclass
class AnalyzedFunction:
    """A function bound to its inputs: output type, identity, and how to get an executor.

    ``create_executor`` runs lazily (the first time a row needs it), so defining, setting up
    or dropping a flow never loads a model.
    """

    kind: str
    spec_json: Any
    output_type: ValueType
    options: OpOptions
    create_executor: Callable[[], FunctionExecutor]
    required_inputs: frozenset[int | str] = field(default_factory=frozenset)
    is_async: bool = False

    def identity_json(self) -> dict[str, Any]:
        """What identifies this function's logic (v0: kind, spec, output type, version)."""
        return {
            "kind": self.kind,
            "spec": self.spec_json,
            "output": self.output_type.to_json(),
            "behavior_version": self.options.behavior_version,
        }


class FunctionDefinition(Protocol):
    def analyze(
        self, spec: Any, args: Sequence[ArgSchema], kwargs: Mapping[str, ArgSchema]
    ) -> AnalyzedFunction: ...


_FUNCTIONS: dict[type, FunctionDefinition] = {}


def register_function(spec_class: type, definition: FunctionDefinition) -> None:
    _FUNCTIONS[spec_class] = definition


def function_definition_for(spec: Any) -> FunctionDefinition:
    definition = _FUNCTIONS.get(type(spec))
    if definition is None:
        raise FlowDefinitionError(
            f"no executor is registered for function spec {type(spec).__name__}; "
            "define one with @cocod.op.executor_class"
        )
    return definition


# -- custom connectors -------------------------------------------------------------------------
# The definitions live in cocod.ops.connectors; the flow layer only needs to find them (the
# row schema of a custom source while the flow is defined, the connector of a target spec).


class SourceConnectorLike(Protocol):
    row_type: ValueType
    num_key_parts: int


_SOURCE_CONNECTORS: dict[type, SourceConnectorLike] = {}
_TARGET_CONNECTORS: dict[type, Any] = {}


def register_source_connector(spec_class: type, connector: SourceConnectorLike) -> None:
    _SOURCE_CONNECTORS[spec_class] = connector


def source_connector_for(spec: Any) -> SourceConnectorLike | None:
    return _SOURCE_CONNECTORS.get(type(spec))


def register_target_connector(spec_class: type, connector: Any) -> None:
    _TARGET_CONNECTORS[spec_class] = connector


def target_connector_for(spec: Any) -> Any | None:
    """The ``@op.target_connector`` registered for this spec's class, if any."""
    return _TARGET_CONNECTORS.get(type(spec))


def target_connector_named(name: str) -> Any | None:
    """By spec class name: a setup record names its connector so drop can find it again."""
    for spec_class, connector in _TARGET_CONNECTORS.items():
        if spec_class.__name__ == name:
            return connector
    return None
