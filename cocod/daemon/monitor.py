"""Background upkeep of what ``status`` shows, so that ``status`` itself never waits.

Once a second it reads every running updater's snapshot (memory only) and tells the
database supervisor when one reports ``database_down``. Row counts of the target tables
are refreshed here, in the background and with a timeout, when an instance's data changed
since the last count (or every ``RECOUNT_SECONDS`` regardless); ``status`` shows the cached
counts with their age. A count that fails because the database is unreachable is reported
to the supervisor like any other failure.
"""

from __future__ import annotations

import time

import anyio
import structlog
from anyio.abc import TaskStatus

from cocod.daemon.database import DatabaseWatch
from cocod.daemon.instances import Instance, Instances
from cocod.errors import CocodError, DatabaseUnavailableError

log = structlog.get_logger(__name__)

TICK_SECONDS = 1.0
COUNT_TIMEOUT_SECONDS = 5.0
RECOUNT_SECONDS = 60.0


class Monitor:
    def __init__(self, instances: Instances, database: DatabaseWatch) -> None:
        self.instances = instances
        self.database = database

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            for instance in list(self.instances.by_name.values()):
                await self._check(instance)
            await anyio.sleep(TICK_SECONDS)

    async def _check(self, instance: Instance) -> None:
        change_at: float | None = None
        if instance.updater is not None:
            snapshot = instance.updater.snapshot()
            if snapshot.get("database_down"):
                self.database.report_down(f"{instance.name}: {snapshot.get('last_error')}")
            change_at = snapshot.get("last_change_at") or snapshot.get("last_pass_at")
        flow = instance.flow
        if flow is None or not self.database.is_up:
            return
        is_stale = (
            instance.row_counts_at is None
            or instance.counted_change_at != change_at
            or time.time() - instance.row_counts_at > RECOUNT_SECONDS
        )
        if not is_stale:
            return
        counts = None
        with anyio.move_on_after(COUNT_TIMEOUT_SECONDS):
            try:
                counts = await flow.row_counts_async()
            except DatabaseUnavailableError as e:
                self.database.report_down(f"row counts of {instance.name}: {e}")
                return
            except CocodError as e:
                log.debug("status.count_failed", instance=instance.name, error=str(e))
                return
        if counts is None:
            # Slow is not down (a table may be locked by a long migration): the
            # supervisor's own probe decides whether the database answers.
            log.debug("status.count_timed_out", instance=instance.name)
            return
        if instance.flow is flow:
            instance.row_counts = counts
            instance.row_counts_at = time.time()
            instance.counted_change_at = change_at
