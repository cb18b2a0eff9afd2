"""What a live updater shares between its source loops and its readers.

:class:`UpdaterStatus` holds the per-source counters and flags that ``status``,
``next_status_updates()`` and ``wait_caught_up`` read (from memory, any thread), and
:func:`is_database_unavailable` tells a failure worth waiting out from one that is not.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import anyio
import asyncpg

from cocod import errors
from cocod.engine.stats import SourceUpdateStats
from cocod.errors import DatabaseError, RowError, SourceError


@dataclass
class FlowLiveUpdaterOptions:
    live_mode: bool = True
    reexport_targets: bool = False
    full_reprocess: bool = False
    print_stats: bool = False


@dataclass
class FlowUpdaterStatusUpdates:
    active_sources: list[str] = field(default_factory=list)
    updated_sources: list[str] = field(default_factory=list)


_CONNECTION_ERRORS = (
    OSError,  # refused, reset, no socket file, timed out
    asyncpg.PostgresConnectionError,  # class 08: connection lost or never made
    asyncpg.exceptions.OperatorInterventionError,  # 57P0x: shutting down, starting up
    asyncpg.InterfaceError,  # "connection is closed", "pool is closed"
)


def is_database_unavailable(exc: BaseException) -> bool:
    """Is this "the database cannot be reached now" (wait and retry), not a bug or a rule?

    ``errors.DatabaseUnavailableError`` says so directly; until every adapter raises it, a
    ``DatabaseError`` caused by a connection-level driver error, or such a driver error
    escaping untranslated, counts too. Source and row errors never do.
    """
    unavailable = getattr(errors, "DatabaseUnavailableError", None)
    if unavailable is not None and isinstance(exc, unavailable):
        return True
    if isinstance(exc, SourceError | RowError):
        return False
    if isinstance(exc, (errors.EmbeddedPostgresError, *_CONNECTION_ERRORS)):
        return True
    if isinstance(exc, DatabaseError):
        cause = exc.__cause__ or exc.__context__
        return cause is not None and is_database_unavailable(cause)
    return False


class UpdaterStatus:
    """Per-source counters, readable from any thread; changes wake next_updates()."""

    def __init__(self, sources: Iterable[str]) -> None:
        self.totals = {name: SourceUpdateStats() for name in sources}
        self.update_counts = dict.fromkeys(self.totals, 0)
        self.reported_counts = dict.fromkeys(self.totals, 0)
        self.active = set(self.totals)
        self.version = 0
        self.reported_version = -1
        self._changed = anyio.Event()
        self.initial_pending = set(self.totals)
        self.caught_up = anyio.Event()
        if not self.initial_pending:
            self.caught_up.set()
        self.last_pass_at: float | None = None
        self.last_change_at: float | None = None
        self.last_error: str | None = None
        self.database_down = dict.fromkeys(self.totals, False)

    def _notify(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = anyio.Event()

    def initial_pass_done(self, source: str) -> None:
        self.initial_pending.discard(source)
        if not self.initial_pending:
            self.caught_up.set()

    def record(self, source: str, stats: SourceUpdateStats) -> None:
        self.totals[source].merge(stats)
        self.last_pass_at = time.time()
        if stats.has_changes:
            self.last_change_at = self.last_pass_at
            self.update_counts[source] += 1
            self._notify()

    def finish(self, source: str) -> None:
        self.active.discard(source)
        self._notify()

    async def next_updates(self) -> FlowUpdaterStatusUpdates:
        while self.version == self.reported_version:
            if not self.active:
                return FlowUpdaterStatusUpdates()
            await self._changed.wait()
        self.reported_version = self.version
        updated = [s for s, n in self.update_counts.items() if n != self.reported_counts[s]]
        self.reported_counts = dict(self.update_counts)
        return FlowUpdaterStatusUpdates(sorted(self.active), updated)
