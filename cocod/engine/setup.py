"""Setup as a diff: the flow's desired persistent state against what was last applied.

Computing the plan touches nothing, not even the FlowPlan it reads: it is what
``setup(report_to_stdout=True)`` prints and what ``update()`` checks (it refuses to run while
the plan has changes), and it may run while a pass is using the FlowPlan. The schema
versions it settles are applied to the FlowPlan by :func:`apply_export_versions`, called by
the runtime once the plan is current or applied. Applying the plan to the database is the
runtime's job (one transaction, since Postgres DDL is transactional).

Each target's state records ``created_by_cocod``: false for a table that existed before
setup and was adopted (``adopt_existing``), which drop then leaves in place.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cocod.engine.plan import FlowPlan
from cocod.errors import FlowDefinitionError

READY = "READY"
TO_CREATE = "TO CREATE"
TO_UPDATE = "TO UPDATE"
TO_DELETE = "TO DELETE"
USER_MANAGED = "USER MANAGED"


@dataclass
class FlowRecord:
    """What setup last applied for one flow (persisted in ``setup_metadata``)."""

    flow_id: int
    sources: dict[str, int] = field(default_factory=dict)
    next_source_id: int = 1
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)  # setup key → state
    deferred_indexes: dict[str, list[str]] = field(default_factory=dict)
    """Setup key → vector indexes an initial load dropped and has not built yet (its
    marker, see :mod:`cocod.storage.deferred_indexes`); not a change setup must apply."""

    def flow_state(self) -> dict[str, Any]:
        return {
            "flow_id": self.flow_id,
            "sources": self.sources,
            "next_source_id": self.next_source_id,
        }


class TargetChangeLike(Protocol):
    status: str
    actions: list[str]
    statements: list[str]
    bumps_schema_version: bool


@dataclass
class TargetDriver:
    """Target-kind specific pieces the planner needs (the Postgres target provides them)."""

    desired_state: Callable[[str, Any], dict[str, Any]]
    setup_key: Callable[[dict[str, Any]], str]
    describe: Callable[[dict[str, Any]], str]
    plan_change: Callable[[dict[str, Any] | None, dict[str, Any] | None], TargetChangeLike]


@dataclass
class TargetItem:
    key: str
    description: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    change: TargetChangeLike
    export_name: str | None = None
    schema_version: int = 1
    target_signature: str = ""


@dataclass
class FlowSetupPlan:
    flow_name: str
    is_drop: bool
    needs_internal_schema: bool
    old_record: FlowRecord | None
    sources: dict[str, int]
    next_source_id: int
    retired_sources: dict[str, int]
    targets: list[TargetItem]

    @property
    def flow_status(self) -> str:
        if self.is_drop:
            return TO_DELETE if self.old_record is not None else READY
        if self.old_record is None:
            return TO_CREATE
        return TO_UPDATE if self.has_changes else READY

    @property
    def has_changes(self) -> bool:
        if self.is_drop:
            return self.old_record is not None
        return (
            self.needs_internal_schema
            or self.old_record is None
            or bool(self.retired_sources)
            or self.sources != self.old_record.sources
            or any(t.change.status not in (READY, USER_MANAGED) for t in self.targets)
            or any(
                t.change.status == USER_MANAGED
                and (t.old is None or not t.old.get("setup_by_user"))
                for t in self.targets
            )
        )

    @property
    def deferred_index_builds(self) -> dict[str, list[str]]:
        """Indexes an initial load deferred, of targets the plan keeps: the loading pass
        builds them at its end, or (after an interruption) the next pass, setup or
        ``verify --repair``. Not drift: :attr:`has_changes` ignores them, so updates go on
        and ``cocod ls`` shows no ``[+]``."""
        if self.is_drop or self.old_record is None:
            return {}
        kept = {t.key for t in self.targets if t.new is not None}
        return {k: v for k, v in self.old_record.deferred_indexes.items() if k in kept}

    @property
    def needs_apply(self) -> bool:
        """Whether :meth:`setup` has anything to do: changes, or deferred index builds."""
        return self.has_changes or bool(self.deferred_index_builds)

    def render(self, schema: str) -> str:
        lines: list[str] = []
        if self.needs_internal_schema and not self.is_drop:
            lines.append(f"{_label(TO_CREATE)} cocod Metadata Tables")
            lines.append(
                f"    TODO: Create schema {schema} with tables setup_metadata, tracking, memo"
            )
            lines.append("")
        lines.append(f"{_label(self.flow_status)} Flow: {self.flow_name}")
        tracking_status = (
            TO_DELETE
            if self.is_drop and self.old_record
            else TO_CREATE
            if self.old_record is None and not self.is_drop
            else READY
        )
        lines.append(f"    {_label(tracking_status)} Internal Storage for Tracking")
        if tracking_status == TO_CREATE:
            lines.append(
                f"        TODO: Register the flow in {schema}.setup_metadata; its tracking "
                f"and memo rows live in {schema}.tracking and {schema}.memo"
            )
        elif tracking_status == TO_DELETE:
            lines.append("        TODO: Delete the flow's tracking rows, memo and setup records")
        if self.retired_sources:
            names = ", ".join(sorted(self.retired_sources))
            lines.append(
                f"        TODO: Clean up {len(self.retired_sources)} legacy source(s) ({names}) "
                "including tracking metadata and target data"
            )
        deferred = self.deferred_index_builds
        for t in self.targets:
            lines.append(f"    {_label(t.change.status)} {t.description}")
            lines.extend(f"        TODO: {a}" for a in t.change.actions)
            if t.key in deferred:
                lines.append(
                    f"        NOTE: vector index(es) {', '.join(deferred[t.key])} deferred by an "
                    "initial load; built when it ends (if it was interrupted: by the next "
                    "update, setup or verify --repair)"
                )
        return "\n".join(lines)


def _label(status: str) -> str:
    return f"[ {status:^9} ]"


def plan_setup(
    plan: FlowPlan,
    old: FlowRecord | None,
    driver: TargetDriver,
    *,
    needs_internal_schema: bool,
) -> FlowSetupPlan:
    """Desired vs recorded state of one flow, and the schema version each export gets."""
    full_name = plan.graph.full_name
    old_sources = old.sources if old else {}
    sources: dict[str, int] = {}
    next_id = old.next_source_id if old else 1
    for name in plan.sources:
        if name in old_sources:
            sources[name] = old_sources[name]
        else:
            sources[name] = next_id
            next_id += 1
    retired = {n: i for n, i in old_sources.items() if n not in sources}
    old_targets = dict(old.targets) if old else {}
    items: list[TargetItem] = []
    claimed: dict[str, str] = {}
    for export in plan.exports.values():
        new_state = driver.desired_state(full_name, export)
        key = driver.setup_key(new_state)
        if key in claimed:
            raise FlowDefinitionError(
                f"exports {claimed[key]!r} and {export.name!r} of flow {full_name!r} both "
                f"write {driver.describe(new_state)}; give each its own table"
            )
        claimed[key] = export.name
        previous = old_targets.pop(key, None)
        change = driver.plan_change(previous, new_state)
        version = int(previous.get("schema_version", 1)) if previous else 1
        if change.bumps_schema_version:
            version = int(previous.get("max_schema_version", version) if previous else 0) + 1
        new_state["schema_version"] = version
        new_state["max_schema_version"] = max(
            version, int(previous.get("max_schema_version", version)) if previous else version
        )
        new_state["export"] = export.name
        new_state["created_by_cocod"] = (
            bool(previous.get("created_by_cocod", True)) if previous else True
        )
        items.append(
            TargetItem(
                key,
                driver.describe(new_state),
                previous,
                new_state,
                change,
                export.name,
                schema_version=version,
                target_signature=target_signature(key, new_state),
            )
        )
    for key, state in old_targets.items():
        items.append(
            TargetItem(key, driver.describe(state), state, None, driver.plan_change(state, None))
        )
    return FlowSetupPlan(
        flow_name=full_name,
        is_drop=False,
        needs_internal_schema=needs_internal_schema,
        old_record=old,
        sources=sources,
        next_source_id=next_id,
        retired_sources=retired,
        targets=items,
    )


def target_signature(setup_key: str, state: dict[str, Any]) -> str:
    """Which table and key columns a row's recorded keys refer to (see ExportPlan)."""
    return json.dumps([setup_key, state.get("key_columns")])


def apply_export_versions(plan: FlowPlan, setup_plan: FlowSetupPlan) -> None:
    """Give the FlowPlan the schema versions and table signatures the setup plan settled.

    The one place setup changes a FlowPlan: called when the recorded setup is current
    (before a pass) or has just been applied, never while merely planning.
    """
    changed = False
    for item in setup_plan.targets:
        if item.export_name is None or item.export_name not in plan.exports:
            continue
        export = plan.exports[item.export_name]
        if (export.schema_version, export.target_signature) != (
            item.schema_version,
            item.target_signature,
        ):
            export.schema_version = item.schema_version
            export.target_signature = item.target_signature
            changed = True
    if changed:
        plan.refresh_logic_fingerprints()


def plan_drop(flow_name: str, old: FlowRecord | None, driver: TargetDriver) -> FlowSetupPlan:
    """Drop is computed from the record alone, so exports removed from code still go."""
    items = [
        TargetItem(key, driver.describe(state), state, None, driver.plan_change(state, None))
        for key, state in (old.targets if old else {}).items()
    ]
    return FlowSetupPlan(
        flow_name=flow_name,
        is_drop=True,
        needs_internal_schema=False,
        old_record=old,
        sources=dict(old.sources) if old else {},
        next_source_id=old.next_source_id if old else 1,
        retired_sources={},
        targets=items,
    )
