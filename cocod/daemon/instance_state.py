"""One flow instance as the daemon sees it: its state, its flow and updater, its counters.

:class:`State` is the vocabulary ``ls`` and ``status`` show; :class:`Instance` is what
:class:`~cocod.daemon.instances.Instances` supervises and the handlers read (from memory).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import anyio

from cocod.daemon.config import InstanceConfig
from cocod.daemon.progress_view import InstanceProgress
from cocod.engine.stats import PassCounters
from cocod.runtime.execution import FlowExecution
from cocod.runtime.flow import Flow
from cocod.runtime.live_updater import FlowLiveUpdater


class State(enum.StrEnum):
    """What ``ls`` and ``status`` show for an instance.

    STOPPED → STARTING → CATCHING_UP → WATCHING for a live instance; BACKOFF between
    failed attempts, FAILED after MAX_FAILURES of them; STOPPING while its task winds
    down; OPEN for an open on-demand instance (held by cocod.FlowInstances:
    cocod/daemon/on_demand.py); DATABASE_DOWN while the database cannot be
    reached (the updater keeps its pending hints; nothing spins); PAUSED while a live
    instance is paused by a command (persisted; its watcher still collects hints);
    STANDBY while another daemon sharing the database owns the instance (no flow is open,
    nothing watches: this daemon polls for the lease and takes over when it frees).
    """

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    CATCHING_UP = "CATCHING_UP"
    WATCHING = "WATCHING"
    OPEN = "OPEN"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    FAILED = "FAILED"
    DATABASE_DOWN = "DATABASE_DOWN"
    PAUSED = "PAUSED"
    STANDBY = "STANDBY"


RUNNING = (State.CATCHING_UP, State.WATCHING)


@dataclass(eq=False)
class Instance:
    config: InstanceConfig
    origin: str  # "config" or "runtime"
    state: State = State.STOPPED
    flow: Flow | None = None
    updater: FlowLiveUpdater | None = None
    failures: int = 0
    last_error: str | None = None
    last_update: dict[str, Any] | None = None
    scope: anyio.CancelScope | None = None
    stopped: anyio.Event = field(default_factory=anyio.Event)
    started: anyio.Event = field(default_factory=anyio.Event)
    """Set once this attempt's watcher is registered and catch-up began, or it failed."""
    row_counts: dict[str, int | None] | None = None
    row_counts_at: float | None = None
    counted_change_at: float | None = None
    database_failures: int = 0  # in a row, while opening; they do not lead to FAILED
    paused: bool = False
    progress: InstanceProgress = field(default_factory=InstanceProgress)
    retired: PassCounters = field(default_factory=PassCounters)
    """Counters of this instance's former updaters (it got a new one after a failure)."""
    execution: FlowExecution | None = None
    """The built execution of ``flow`` (its function runners hold the call counts)."""
    retired_calls: FunctionCalls = field(default_factory=lambda: FunctionCalls(0, 0))
    """Memoized-function counts of this instance's former flows (closed, reopened)."""

    @property
    def name(self) -> str:
        return self.config.name

    def counters(self) -> PassCounters:
        """Everything its updaters counted since the daemon started (monotonic)."""
        total = self.retired.copy()
        if self.updater is not None:
            total.merge(self.updater.counters())
        return total

    def function_calls(self) -> FunctionCalls:
        """Memoized functions (the embedder): computed calls and memo hits, since start."""
        current = memoized_calls(self.execution)
        return FunctionCalls(
            self.retired_calls.computed + current.computed, self.retired_calls.hits + current.hits
        )


@dataclass(frozen=True)
class FunctionCalls:
    computed: int
    """Calls of memoized functions that ran (for the embedder: chunks embedded)."""
    hits: int
    """Calls answered from the memo instead."""


def memoized_calls(execution: FlowExecution | None) -> FunctionCalls:
    if execution is None:
        return FunctionCalls(0, 0)
    computed = hits = 0
    for source in execution.sources.values():
        for runner in source.runners.values():
            if runner.function.options.cache:
                computed += runner.num_calls
                # Counted by the evaluator where it keeps the count (see metrics docs).
                hits += int(getattr(runner, "num_memo_hits", 0))
    return FunctionCalls(computed, hits)
