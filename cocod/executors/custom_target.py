"""Custom targets at run time: the setup state they record, their setup changes, their writes.

A custom target's ``mutate`` runs inside the row transaction, after the Postgres targets'
writes of the same batch and before the tracking rows are written and committed (the
state store calls the writers first). So:

* ``mutate`` succeeded, the commit failed or the process died before it: tracking still
  holds the old state, the next pass processes the rows again and ``mutate`` is called
  again with the same changes (at-least-once; v0 asks connectors to be idempotent).
* ``mutate`` failed: it is retried here with capped exponential backoff; if it still
  fails, the transaction rolls back, the committer retries the rows one by one, and what
  still fails is a row error that the next pass retries. No change is ever marked done
  without ``mutate`` having returned.

``apply_setup_change`` runs the same way around the setup record's transaction (see
:mod:`cocod.runtime.setup_apply`). docs/custom-connectors.md says what is atomic.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from cocod.engine.committer import backoff_delay
from cocod.engine.interfaces import ExportWrite
from cocod.engine.plan import ExportPlan
from cocod.engine.values import key_to_json_text
from cocod.errors import FlowDefinitionError, RowError, SetupError
from cocod.flow.specs import target_connector_for, target_connector_named
from cocod.flow.types import FieldSchema, ValueType, struct
from cocod.ops.connectors import (
    IndexOptions,
    TargetConnector,
    TargetStateCompatibility,
    positional_args,
)

log = structlog.get_logger(__name__)

KIND = "Custom"
MUTATE_ATTEMPTS = 3
"""Calls of ``mutate`` per batch before the batch fails (the committer then splits it)."""


def is_custom_spec(spec: Any) -> bool:
    return target_connector_for(spec) is not None


def is_custom_state(state: dict[str, Any]) -> bool:
    return state.get("kind") == KIND


def _connector_of_spec(spec: Any) -> TargetConnector:
    connector = target_connector_for(spec)
    if not isinstance(connector, TargetConnector):
        raise FlowDefinitionError(
            f"no target connector is registered for target spec {type(spec).__name__}; "
            f"define one with @cocod.op.target_connector(spec_cls={type(spec).__name__})"
        )
    return connector


def _connector_named(name: str, what: str) -> TargetConnector:
    connector = target_connector_named(name)
    if not isinstance(connector, TargetConnector):
        raise SetupError(
            f"{what}: the target connector for {name} is not registered in this process; "
            "run the command on the app that defines it (the module with its "
            "@cocod.op.target_connector)"
        )
    return connector


def _fields(export: ExportPlan) -> tuple[tuple[FieldSchema, ...], tuple[FieldSchema, ...]]:
    keys = tuple(
        FieldSchema(n, t) for n, t in zip(export.key_fields, export.key_types, strict=True)
    )
    values = tuple(
        FieldSchema(n, t) for n, t in zip(export.value_fields, export.value_types, strict=True)
    )
    return keys, values


def desired_state(full_flow_name: str, export: ExportPlan) -> dict[str, Any]:
    """What the setup record keeps for a custom target: its key, its state, its key shape."""
    spec = export.export.target
    connector = _connector_of_spec(spec)
    keys, values = _fields(export)
    index = IndexOptions(
        primary_key_fields=tuple(export.key_fields),
        vector_indexes=export.export.vector_indexes,
        fts_indexes=export.export.fts_indexes,
    )
    return {
        "kind": KIND,
        "connector": connector.name,
        "persistent_key": connector.persistent_key(spec, export.name),
        "state": connector.setup_state(spec, list(keys), list(values), index),
        "key_columns": [[f.name, f.type.to_json()] for f in keys],
        "setup_by_user": export.export.setup_by_user,
    }


def setup_key(state: dict[str, Any]) -> str:
    return f"{KIND}:{state['connector']}:{json.dumps(state['persistent_key'], sort_keys=True)}"


def describe(state: dict[str, Any]) -> str:
    connector = target_connector_named(str(state["connector"]))
    if isinstance(connector, TargetConnector):
        return connector.describe(state["persistent_key"])
    return f"{state['connector']} target {json.dumps(state['persistent_key'])}"


@dataclass
class CustomTargetChange:
    """A planned setup change; ``apply_setup_change`` is called once per previous state."""

    status: str
    actions: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    bumps_schema_version: bool = False
    connector: str = ""
    persistent_key: Any = None
    previous: list[Any] = field(default_factory=list)
    current: Any = None

    @property
    def needs_apply(self) -> bool:
        return bool(self.connector) and self.status not in ("READY", "USER MANAGED")


def plan_target_change(
    old: dict[str, Any] | None, new: dict[str, Any] | None, staged: Sequence[Any] = ()
) -> CustomTargetChange:
    """The change from the recorded state, and from ``staged`` ones.

    ``staged`` are states a setup began to apply but never recorded (it failed or was
    killed after ``apply_setup_change``): the target may be in any of them, so each is
    also a previous state, as v0 passes them.
    """
    state = new if new is not None else old
    assert state is not None
    base = {"connector": str(state["connector"]), "persistent_key": state["persistent_key"]}
    name = describe(state)
    if new is not None and new.get("setup_by_user"):
        return CustomTargetChange("USER MANAGED")
    current = new["state"] if new is not None else None
    extra = [s for s in staged if s != current]
    if new is None:
        assert old is not None
        if old.get("setup_by_user") and not extra:
            return CustomTargetChange("TO DELETE", ["Forget user-managed target (kept)"])
        previous = ([] if old.get("setup_by_user") else [old["state"]]) + extra
        return CustomTargetChange(
            "TO DELETE", [f"Tear down {name}"], previous=_unique(previous), current=None, **base
        )
    if old is None or old.get("setup_by_user"):
        return CustomTargetChange(
            "TO CREATE",
            [f"Set up {name}"],
            previous=_unique([None, *extra]),
            current=current,
            **base,
        )
    connector = _connector_named(base["connector"], f"setup of {name}")
    compatibility = connector.compatibility(current, old["state"])
    if old.get("key_columns") != new.get("key_columns"):
        compatibility = TargetStateCompatibility.NOT_COMPATIBLE
    if compatibility == TargetStateCompatibility.COMPATIBLE and not extra:
        return CustomTargetChange("READY")
    previous = [] if compatibility == TargetStateCompatibility.COMPATIBLE else [old["state"]]
    change = CustomTargetChange(
        "TO UPDATE",
        [f"Update {name}"],
        previous=_unique(previous + extra),
        current=current,
        **base,
    )
    if extra:
        change.actions.append(f"{len(extra)} state(s) an interrupted setup may have applied")
    if compatibility == TargetStateCompatibility.NOT_COMPATIBLE:
        change.bumps_schema_version = True
        change.actions.append("Not compatible with the exported rows: export every row again")
    return change


def _unique(states: list[Any]) -> list[Any]:
    out: list[Any] = []
    for state in states:
        if state not in out:
            out.append(state)
    return out


async def call_user(
    fn: Callable[..., Any], *args: Any, limiter: anyio.CapacityLimiter | None = None
) -> Any:
    """Run user code: a coroutine function on the loop, anything else in a worker thread."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    result = await anyio.to_thread.run_sync(lambda: fn(*args), limiter=limiter)
    if inspect.isawaitable(result):
        result = await result
    return result


async def apply_setup_change(
    change: CustomTargetChange, limiter: anyio.CapacityLimiter | None = None
) -> None:
    """Call the connector's ``apply_setup_change`` for each previous state (v0's protocol)."""
    connector = _connector_named(change.connector, "setup")
    fn = connector.method("apply_setup_change")
    assert fn is not None  # checked when the connector was registered
    key = connector.load_key(change.persistent_key)
    current = connector.load_state(change.current)
    for previous in change.previous or [None]:
        try:
            await call_user(fn, key, connector.load_state(previous), current, limiter=limiter)
        except Exception as e:
            target = connector.describe(change.persistent_key)
            raise SetupError(
                f"{connector.name}.apply_setup_change failed for {target}: {type(e).__name__}: {e}"
            ) from e


class CustomTargetWriter:
    """The TargetWriter of one custom export: its rows' changes become one ``mutate`` call."""

    def __init__(
        self,
        state: dict[str, Any],
        export: ExportPlan,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self._connector = _connector_of_spec(export.export.target)
        self._spec = export.export.target
        self._state = state
        self._export = export
        self._limiter = limiter
        keys, values = _fields(export)
        self._key_fields = keys
        self._value_type: ValueType = struct([(f.name, f.type) for f in values])
        self._prepared: tuple[Any] | None = None
        self._prepare_lock = anyio.Lock()

    async def _prepared_spec(self) -> Any:
        """``prepare`` runs once per writer (per setup), on the first write."""
        async with self._prepare_lock:
            if self._prepared is None:
                fn = self._connector.method("prepare")
                if fn is None:
                    self._prepared = (self._spec,)
                else:
                    args = positional_args(
                        fn,
                        spec=self._spec,
                        setup_state=self._connector.load_state(self._state.get("state")),
                        key_fields_schema=list(self._key_fields),
                        value_fields_schema=list(self._value_type.fields),
                    )
                    try:
                        self._prepared = (await call_user(fn, *args, limiter=self._limiter),)
                    except Exception as e:
                        raise RowError(
                            f"export {self._export.name!r}: {self._connector.name}.prepare "
                            f"failed: {type(e).__name__}: {e}; the rows are retried on the "
                            "next update"
                        ) from e
            return self._prepared[0]

    async def write(self, conn: Any, write: ExportWrite) -> None:
        """Deletes first, then upserts: a key both deleted and upserted in a batch is kept.

        ``conn`` (the row transaction) is not used: the connector writes elsewhere.
        """
        key_types = self._export.key_types
        changes: dict[str, tuple[list[Any], dict[str, Any] | None]] = {}
        for parts in write.deletes:
            changes[key_to_json_text(list(parts), key_types)] = (list(parts), None)
        for row in write.upserts:
            parts = [row.get(f.name) for f in self._key_fields]
            changes[key_to_json_text(parts, key_types)] = (parts, row)
        if not changes:
            return
        prepared = await self._prepared_spec()
        argument = self._connector.mutation(
            prepared, self._key_fields, self._value_type, list(changes.values())
        )
        mutate = self._connector.method("mutate")
        assert mutate is not None
        for attempt in range(MUTATE_ATTEMPTS):
            try:
                await call_user(mutate, argument, limiter=self._limiter)
                return
            except Exception as e:
                if attempt + 1 >= MUTATE_ATTEMPTS:
                    raise RowError(
                        f"export {self._export.name!r}: {self._connector.name}.mutate failed "
                        f"{MUTATE_ATTEMPTS} times ({type(e).__name__}: {e}); nothing was "
                        "recorded as done, the rows are retried on the next update"
                    ) from e
                delay = backoff_delay(attempt)
                log.warning(
                    "target.mutate_retry",
                    export=self._export.name,
                    rows=len(changes),
                    attempt=attempt + 1,
                    delay_s=round(delay, 3),
                    error=f"{type(e).__name__}: {e}",
                )
            await anyio.sleep(delay)
