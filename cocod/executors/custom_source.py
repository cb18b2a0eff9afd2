"""Custom sources at run time: a ``@op.source_connector`` class behind the engine's SourceReader.

The engine keys rows by text: a custom row's key is the JSON text of its key parts (the
same text tracking stores for target keys), so any key type the connector declares works.

Change detection follows the connector: with ordinals (``provides_ordinal()``), a row whose
listed ordinal equals the tracked one is not read again; without, every listed row is
read and its value's fingerprint decides whether anything is recomputed. A tracked row
the listing no longer yields is deleted (v0's rule). A failure of
``list()`` is the source's error (the pass stops and deletes nothing, like a missing
folder); a failure of ``get_value()`` is that row's error (its old rows are kept).
"""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from cocod.engine.fingerprint import Fingerprinter
from cocod.engine.interfaces import Ordinal, SourceRow
from cocod.engine.values import key_from_json_text, key_to_json_text, to_json_value
from cocod.errors import FlowDefinitionError, RowError, SourceError
from cocod.executors.custom_target import call_user
from cocod.flow.specs import SourceSpec, source_connector_for
from cocod.ops.connectors import (
    NO_ORDINAL,
    NON_EXISTENCE,
    PartialSourceRow,
    PartialSourceRowData,
    SourceConnector,
    SourceReadOptions,
    key_to_engine,
    key_to_python,
    positional_args,
)

UNKNOWN_ORDINAL: Ordinal = (-1, -1)
"""Listed for rows without an ordinal: never equal to a tracked one, so the row is read."""


def is_custom_source(spec: Any) -> bool:
    return isinstance(source_connector_for(spec), SourceConnector)


def _ordinal(value: Any) -> Ordinal | None:
    if value is None or value == NO_ORDINAL:
        return None
    if isinstance(value, datetime.datetime):
        return (int(value.timestamp() * 1_000_000), 0)
    return (int(value), 0)


@dataclass(frozen=True)
class LiveOptions:
    """What the live updater asks of a source's spec: custom sources have no change stream
    (v0 polls them every ``refresh_interval``), so nothing to watch."""

    source_spec: SourceSpec
    watch_changes: bool | None = False


class CustomSourceReader:
    """The SourceReader of one custom source; the connector is created on first use."""

    def __init__(self, spec: SourceSpec, limiter: anyio.CapacityLimiter | None = None) -> None:
        connector = source_connector_for(spec)
        if not isinstance(connector, SourceConnector):
            raise FlowDefinitionError(
                f"no source connector is registered for {type(spec).__name__}"
            )
        self.spec = LiveOptions(spec)
        self._source_spec = spec
        self._connector = connector
        self._limiter = limiter
        self._instance: Any = None
        self._lock = anyio.Lock()
        self._key_types = [f.type for f in connector.key_fields]
        self._listed: dict[str, Ordinal | None] = {}
        self._has_listing = False

    @property
    def name(self) -> str:
        return self._connector.connector_cls.__name__

    async def _executor(self) -> Any:
        async with self._lock:
            if self._instance is None:
                create = self._connector.connector_cls.create  # type: ignore[attr-defined]
                self._instance = await call_user(create, self._source_spec, limiter=self._limiter)
            return self._instance

    def _provides_ordinal(self, executor: Any) -> bool:
        fn = getattr(executor, "provides_ordinal", None)
        return bool(fn()) if callable(fn) else False

    async def list_rows(self) -> dict[str, Ordinal]:
        try:
            executor = await self._executor()
            use_ordinal = self._provides_ordinal(executor)
            options = SourceReadOptions(include_ordinal=use_ordinal)
            listed = await self._list(executor.list, options)
        except SourceError:
            raise
        except Exception as e:
            raise SourceError(
                f"{self.name}.list() failed: {type(e).__name__}: {e} (nothing was deleted; "
                "the next update lists again)"
            ) from e
        out: dict[str, Ordinal] = {}
        seen: dict[str, Ordinal | None] = {}
        for row in listed:
            if not isinstance(row, PartialSourceRow):
                raise SourceError(
                    f"{self.name}.list() must yield PartialSourceRow objects, got "
                    f"{type(row).__name__}"
                )
            text = self._key_text(row.key)
            ordinal = _ordinal(row.data.ordinal) if use_ordinal and row.data else None
            seen[text] = ordinal
            out[text] = ordinal if ordinal is not None else UNKNOWN_ORDINAL
        self._listed, self._has_listing = seen, True
        return out

    async def _list(self, method: Callable[..., Any], options: SourceReadOptions) -> list[Any]:
        args = positional_args(method, options=options)
        if inspect.isasyncgenfunction(method) or inspect.iscoroutinefunction(method):
            result = method(*args)
            if inspect.isawaitable(result):
                result = await result
            if hasattr(result, "__aiter__"):
                return [row async for row in result]
            return list(result)
        # A sync list (a generator or a function) may block (network, disk): call it and
        # drain what it returns in a worker thread.
        return await anyio.to_thread.run_sync(lambda: list(method(*args)), limiter=self._limiter)

    def _key_text(self, key: Any) -> str:
        try:
            parts = key_to_engine(key, self._connector.key_fields)
            return key_to_json_text(parts, self._key_types)
        except Exception as e:
            raise SourceError(
                f"{self.name}.list() yielded a key {key!r} of the wrong type: {e}"
            ) from e

    async def list_rows_under(self, folder_keys: Sequence[str]) -> dict[str, Ordinal]:
        """Folder hints come from a file watcher, which a custom source does not have."""
        return {}

    async def read_row(self, key: str) -> SourceRow | None:
        if self._has_listing and key not in self._listed:
            return None  # gone from the listing: deleted, as v0 does (no get_value call)
        connector = self._connector
        parts = key_from_json_text(key, self._key_types)
        user_key = key_to_python(parts, connector.key_annotation, connector.key_fields)
        try:
            executor = await self._executor()
            method = executor.get_value
            options = SourceReadOptions(
                include_ordinal=self._provides_ordinal(executor), include_value=True
            )
            data = await call_user(
                method,
                *positional_args(method, key=user_key, options=options),
                limiter=self._limiter,
            )
        except Exception as e:
            raise RowError(
                f"{self.name}.get_value({user_key!r}) failed: {type(e).__name__}: {e}; the "
                "row keeps its old output and is retried on the next update"
            ) from e
        if not isinstance(data, PartialSourceRowData):
            raise RowError(
                f"{self.name}.get_value({user_key!r}) must return PartialSourceRowData, got "
                f"{type(data).__name__}"
            )
        if data.value == NON_EXISTENCE:
            return None
        if data.value is None:
            raise RowError(
                f"{self.name}.get_value({user_key!r}) returned no value; return "
                "PartialSourceRowData(value=...) or value=NON_EXISTENCE for a deleted row"
            )
        try:
            value = connector.value_to_engine(parts, data.value)
        except Exception as e:
            raise RowError(
                f"{self.name}.get_value({user_key!r}): the value does not match value_type "
                f"({type(e).__name__}: {e})"
            ) from e
        ordinal = _ordinal(data.ordinal)
        if ordinal is None:
            ordinal = self._listed.get(key)
        fp = Fingerprinter().add(to_json_value(value, connector.row_type)).digest()
        return SourceRow(value=value, ordinal=ordinal, content_fp=fp)
