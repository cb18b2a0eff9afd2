"""Targets dispatched by kind: the planner's functions and the writer of each export.

A flow's exports are Postgres tables or targets of registered custom connectors. Setup
planning, setup applying and the state store each need the functions of the right kind
for one state; this module is the one place that tells the kinds apart, so none of them
does: :data:`TARGET_DRIVER` gives the planner the Postgres or the custom functions for
each export and each recorded state, and :func:`create_writer` the writer each export's
rows go through.
"""

from __future__ import annotations

from typing import Any

import anyio

from cocod.engine.plan import ExportPlan, FlowPlan
from cocod.engine.setup import FlowSetupPlan, TargetChangeLike, TargetDriver
from cocod.executors import custom_target, postgres
from cocod.ops.targets import Postgres
from cocod.storage.state import TargetWriter


def _postgres_key(state: dict[str, Any]) -> str:
    return f"Postgres:{postgres.table_of(state).setup_key}"


def _postgres_describe(state: dict[str, Any]) -> str:
    return f"Postgres table {postgres.table_of(state).display}"


POSTGRES_DRIVER = TargetDriver(
    desired_state=postgres.desired_state,
    setup_key=_postgres_key,
    describe=_postgres_describe,
    plan_change=postgres.plan_target_change,
)
"""Postgres tables only."""


def _desired_state(full_name: str, export: ExportPlan) -> dict[str, Any]:
    spec = export.export.target
    if isinstance(spec, Postgres):
        return postgres.desired_state(full_name, export)
    # A spec of any other class needs its connector (the error says how to register one).
    return custom_target.desired_state(full_name, export)


def _setup_key(state: dict[str, Any]) -> str:
    if custom_target.is_custom_state(state):
        return custom_target.setup_key(state)
    return _postgres_key(state)


def _describe(state: dict[str, Any]) -> str:
    if custom_target.is_custom_state(state):
        return custom_target.describe(state)
    return _postgres_describe(state)


def _plan_change(old: dict[str, Any] | None, new: dict[str, Any] | None) -> TargetChangeLike:
    state = new if new is not None else old
    if state is not None and custom_target.is_custom_state(state):
        return custom_target.plan_target_change(old, new)
    return postgres.plan_target_change(old, new)


TARGET_DRIVER = TargetDriver(
    desired_state=_desired_state,
    setup_key=_setup_key,
    describe=_describe,
    plan_change=_plan_change,
)
"""Every target kind: Postgres tables and registered custom connectors."""


def create_writer(
    state: dict[str, Any], export: ExportPlan, limiter: anyio.CapacityLimiter | None
) -> TargetWriter:
    if custom_target.is_custom_state(state):
        return custom_target.CustomTargetWriter(state, export, limiter)
    return postgres.TableWriter(state, export)


def create_writers(
    setup_plan: FlowSetupPlan, flow_plan: FlowPlan, limiter: anyio.CapacityLimiter | None
) -> dict[str, TargetWriter]:
    """One writer per export the setup plan keeps (what the state store commits through)."""
    return {
        t.export_name: create_writer(t.new, flow_plan.exports[t.export_name], limiter)
        for t in setup_plan.targets
        if t.new is not None and t.export_name is not None
    }


__all__ = ["POSTGRES_DRIVER", "TARGET_DRIVER", "create_writer", "create_writers"]
