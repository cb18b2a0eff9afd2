"""Supervision of the database the daemon depends on: up, down, restarting.

Everyone who meets the database failing reports it here (an instance whose updater says
``database_down``, a command that hit :class:`DatabaseUnavailableError`, a background
row count that failed); one task then checks it (a ``SELECT 1`` with a timeout, also every
few seconds while all looks well, so a dead server is seen before anyone trips on it) and,
while it does not answer, calls ``LibraryContext.ensure_database_running()`` — which
restarts a dead embedded server and probes an external one — with capped exponential
backoff and jitter until it answers.
Nothing else retries the database on its own schedule, so an outage costs one probe per
backoff step, however many instances and clients are waiting. The state is in memory, so
``ping``, ``ls`` and ``status`` can report it without touching the database.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Awaitable, Callable

import anyio
import structlog
from anyio.abc import TaskStatus

log = structlog.get_logger(__name__)

UP_PROBE_SECONDS = 5.0
"""While up, a cheap probe this often finds a dead server before anyone trips on it."""
PROBE_TIMEOUT_SECONDS = 3.0
"""A check that has not answered by then (a frozen server) counts as a failed one; a
restart gets three times as long."""
MIN_PROBE_GAP_SECONDS = 1.0
"""Reports while the database looks up trigger at most one probe per this interval."""
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 30.0


class DatabaseState(enum.StrEnum):
    UP = "up"
    DOWN = "down"
    RESTARTING = "restarting"  # a probe (and, for the embedded server, a restart) is running


def retry_delay(failures: int) -> float:
    """Capped exponential backoff with full jitter in its upper half (never zero)."""
    ceiling = min(FIRST_RETRY_SECONDS * 2.0 ** max(failures - 1, 0), MAX_RETRY_SECONDS)
    return ceiling * random.uniform(0.5, 1.0)


class DatabaseWatch:
    """The daemon's one view of the database's health, and the task that restores it."""

    def __init__(
        self,
        is_answering: Callable[[], Awaitable[str | None]],
        ensure_running: Callable[[], Awaitable[bool]],
        on_change: Callable[[DatabaseState], None] = lambda state: None,
    ) -> None:
        """``is_answering`` returns None when the database answers, else what failed;
        ``ensure_running`` (re)starts what it can and returns whether it is running."""
        self._is_answering = is_answering
        self._ensure_running = ensure_running
        self._on_change = on_change
        self.state = DatabaseState.UP
        self.since = time.time()
        self.last_error: str | None = None
        self._wake = anyio.Event()
        self._up = anyio.Event()
        self._up.set()
        self._failures = 0

    @property
    def is_up(self) -> bool:
        return self.state is DatabaseState.UP

    def describe(self) -> dict[str, object]:
        """What ``ping`` and ``status`` show (from memory)."""
        return {
            "state": str(self.state),
            "since": self.since,
            "last_error": None if self.is_up else self.last_error,
        }

    def report_down(self, reason: str) -> None:
        """Someone failed to reach the database: check now (or at the next backoff step).

        A report alone does not mark the database down, the check does: a report can be
        stale (an updater whose last pass failed before a restart) and must not make
        every instance flip to DATABASE_DOWN while the database answers."""
        if self.is_up and not self._wake.is_set():
            log.info("database.reported_down", reason=reason)
        self._wake.set()

    async def wait_up(self) -> None:
        await self._up.wait()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        last_probe = 0.0
        while True:
            if self.is_up:
                with anyio.move_on_after(UP_PROBE_SECONDS):
                    await self._wake.wait()
                gap = MIN_PROBE_GAP_SECONDS - (anyio.current_time() - last_probe)
                if gap > 0:
                    await anyio.sleep(gap)
            else:
                # Reports while down do not shorten the wait: that is what keeps an
                # outage from turning into a busy loop of probes.
                await anyio.sleep(retry_delay(self._failures))
            self._wake = anyio.Event()
            last_probe = anyio.current_time()
            await self._probe()

    async def _probe(self) -> None:
        if self.is_up:
            error = await self._check()
            if error is None:
                return
            log.warning("database.down", error=error)
            self.last_error = error
            self._set(DatabaseState.DOWN)
            return  # the next turn restarts it, after the first backoff step
        self._set(DatabaseState.RESTARTING)
        is_running = False
        with anyio.move_on_after(3 * PROBE_TIMEOUT_SECONDS):
            try:
                is_running = await self._ensure_running()
            except Exception as e:  # the contract is "never raises"; be safe anyway
                self.last_error = f"{type(e).__name__}: {e}"
        error = await self._check() if is_running else "it is not running"
        if error is None:
            log.info("database.back", after_failures=self._failures)
            self._failures = 0
            self._set(DatabaseState.UP)
            return
        self._failures += 1
        self.last_error = error
        log.warning("database.still_down", failures=self._failures, error=error)
        self._set(DatabaseState.DOWN)

    async def _check(self) -> str | None:
        with anyio.move_on_after(PROBE_TIMEOUT_SECONDS):
            try:
                return await self._is_answering()
            except Exception as e:
                return f"{type(e).__name__}: {e}"
        return f"no answer within {PROBE_TIMEOUT_SECONDS:g} s"

    def _set(self, state: DatabaseState) -> None:
        if state is self.state:
            return
        self.state = state
        self.since = time.time()
        if state is DatabaseState.UP:
            self.last_error = None
            self._up.set()
        elif self._up.is_set():
            self._up = anyio.Event()
        self._on_change(state)
