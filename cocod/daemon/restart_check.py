"""After the database comes back: check each live instance against its files, repair drift.

A restarted server may have lost what it had not flushed (commits are asynchronous) or have
been changed while the daemon could not see it. Instances resume on their own backoff and
catch up first; verification waits for that (a bounded time), then verifies each watching
instance with repair, one at a time, each within a deadline. Paused instances are skipped:
they run no pass until resumed, and their resume pass catches up anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import structlog

from cocod.daemon.instance_state import State
from cocod.errors import CocodError

if TYPE_CHECKING:
    from cocod.daemon.service import Daemon

log = structlog.get_logger(__name__)

VERIFY_WAIT_SECONDS = 60.0
"""After a database restart, how long verification waits for instances to resume."""
VERIFY_TIMEOUT_SECONDS = 600.0
"""The most one instance's verification (and repair) may take after a restart."""


async def verify_after_restart(daemon: Daemon) -> None:
    with anyio.move_on_after(VERIFY_WAIT_SECONDS):
        await daemon.wait_instances_settled(
            {State.DATABASE_DOWN, State.STARTING, State.CATCHING_UP}
        )
    from cocod.runtime.verify import verify_flow

    instances = daemon.instances
    for instance in list(instances.by_name.values()):
        if not instance.config.live or instance.state is not State.WATCHING:
            log.info(
                "verify.after_restart_skipped", instance=instance.name, state=str(instance.state)
            )
            continue
        try:
            with anyio.fail_after(VERIFY_TIMEOUT_SECONDS):
                async with instances.pinned(instance.name) as flow:
                    report = await verify_flow(flow, repair=True)
        except (CocodError, TimeoutError) as e:
            log.warning("verify.after_restart_failed", instance=instance.name, error=str(e))
            continue
        log.info(
            "verify.after_restart",
            instance=instance.name,
            had_drift=report.has_drift,
            findings={f"{k}:{w}": f.count for (k, w), f in report.findings.items() if f.count},
        )
