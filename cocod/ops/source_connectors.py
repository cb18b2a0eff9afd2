"""Custom sources: v0's ``@op.source_connector`` and the row types its methods exchange.

Decorating checks the connector class (so a wrong one fails at import, as in v0) and
records the row type its specs produce; listing and reading rows (threads, ordinals,
retries) is :mod:`cocod.executors.custom_source`'s job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from cocod.errors import FlowDefinitionError
from cocod.flow.specs import SourceSpec, register_source_connector
from cocod.flow.types import to_engine_value, type_of_annotation
from cocod.flow.value_type import FieldSchema, ValueType, struct
from cocod.ops.connector_keys import key_fields_of, required_method

K = TypeVar("K")
V = TypeVar("V")

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
            required_method(cls, name)
        key_fields = key_fields_of(key_type, what)
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
