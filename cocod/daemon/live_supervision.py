"""A live instance's task: open, set up, serve its live updater; back off and retry.

Each live instance runs in its own cancel scope (:meth:`Instances.start` starts
:func:`supervise`): open the flow (the factory import and the definition run in a worker
thread), set it up, then serve its live updater, started with ``task_group.start()`` so
"its watcher is registered and its catch-up has begun" is a handshake, not a guess. A
failure is logged with the instance bound, the instance backs off exponentially (with
jitter) and retries, and after MAX_FAILURES it stays FAILED until a command opens it again;
other instances never notice. A failure because the database is unreachable is not the
flow's fault: the instance shows DATABASE_DOWN, waits for the database supervisor to see it
back, and does not count it towards FAILED. In a cluster it runs only while this daemon
holds its lease (:func:`cocod.daemon.ownership.run_owned`), and is STANDBY otherwise.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import anyio
import structlog

from cocod.daemon.database import retry_delay
from cocod.daemon.instance_state import Instance, State
from cocod.daemon.ownership import OwnershipLost, run_owned
from cocod.errors import DatabaseUnavailableError
from cocod.runtime import context
from cocod.runtime.bridge import bridge
from cocod.runtime.live_updater import FlowLiveUpdaterOptions

if TYPE_CHECKING:
    from cocod.daemon.instances import Instances

log = structlog.get_logger(__name__)

MAX_FAILURES = 8  # backoff 1, 2, 4 … 60 s: about two minutes before FAILED
MAX_BACKOFF_SECONDS = 60.0


async def supervise(owner: Instances, instance: Instance) -> None:
    scope = instance.scope
    assert scope is not None
    structlog.contextvars.bind_contextvars(instance=instance.name)
    try:
        with scope:
            while True:
                try:
                    await _run(owner, instance)
                    return
                except Exception as group:
                    e = _leaf(group)
                    if isinstance(e, OwnershipLost):
                        # Not a failure: another daemon owns it now, or will.
                        log.info("instance.ownership_ended", reason=str(e))
                        _teardown(owner, instance)
                        continue
                    instance.last_error = f"{type(e).__name__}: {e}"
                    _teardown(owner, instance)
                    instance.started.set()
                    if isinstance(e, DatabaseUnavailableError):
                        instance.database_failures += 1
                        await _wait_for_database(
                            owner, instance, str(e), instance.database_failures
                        )
                        continue
                    instance.failures += 1
                    log.error(
                        "instance.failed",
                        instance=instance.name,
                        error=instance.last_error,
                        failures=instance.failures,
                    )
                    if instance.failures >= MAX_FAILURES:
                        owner.set_state(instance, State.FAILED)
                        return
                    owner.set_state(instance, State.BACKOFF)
                    ceiling = min(2.0 ** (instance.failures - 1), MAX_BACKOFF_SECONDS)
                    await anyio.sleep(ceiling * random.uniform(0.75, 1.0))
    finally:
        # Nothing to await here: the updater's own task group already wound down
        # (its in-flight commit is bounded by the daemon's drain budget).
        _teardown(owner, instance)
        if instance.state is not State.FAILED:
            owner.set_state(instance, State.STOPPED)
        instance.scope = None
        instance.started.set()
        instance.stopped.set()


async def _wait_for_database(
    owner: Instances, instance: Instance, reason: str, failures: int
) -> None:
    """Not the flow's fault: wait until the database supervisor sees it back."""
    log.warning("instance.database_unavailable", instance=instance.name, error=reason)
    owner.on_database_unavailable(reason)
    owner.set_state(instance, State.DATABASE_DOWN)
    await owner.wait_database_up()
    # Also back off on our own count: a database that answers probes but fails this
    # instance (or flaps) must not make this loop spin.
    await anyio.sleep(retry_delay(failures))


def _teardown(owner: Instances, instance: Instance) -> None:
    if instance.updater is not None:
        instance.retired.merge(instance.updater.counters())
    instance.updater = None
    owner.close_flow(instance)


async def _run(owner: Instances, instance: Instance) -> None:
    if owner.cluster is None or not instance.config.live:
        await _run_live(owner, instance)
        return
    namespace = context.get_app_namespace(trailing_delimiter=".")
    await run_owned(
        instance,
        owner.cluster,
        f"{namespace}{instance.name}",
        standby=lambda: _stand_by(owner, instance),
        run_live=lambda: _run_live(owner, instance),
    )


def _stand_by(owner: Instances, instance: Instance) -> None:
    owner.set_state(instance, State.STANDBY)
    instance.started.set()  # READY does not wait for another daemon's instances


async def _run_live(owner: Instances, instance: Instance) -> None:
    owner.set_state(instance, State.STARTING)
    await owner.attach_flow(instance, await owner.open_flow(instance))
    assert instance.flow is not None
    # Not the indexes an interrupted initial load deferred: the catch-up pass builds them
    # at its end, after the rest of the load, and a failed build leaves them for the next.
    execution = await instance.flow.execution_async()
    await bridge.run_async(execution.setup(context.get_context(), build_deferred=False))
    owner.set_state(instance, State.CATCHING_UP)
    updater = instance.flow.live_updater(FlowLiveUpdaterOptions(live_mode=True))
    updater.report_progress_to(instance.progress)
    if instance.paused:
        updater.pause()  # its watcher starts; its catch-up pass waits for resume
    async with anyio.create_task_group() as tg:
        # Returns once the watchers are registered and the catch-up pass has begun.
        await tg.start(updater.serve)
        instance.updater = updater  # only a started updater: status reads it
        if instance.paused != updater.is_paused:  # paused or resumed while it started
            (updater.pause if instance.paused else updater.resume)()
        instance.started.set()
        await updater.wait_caught_up_async()
        snapshot = updater.snapshot()
        instance.last_update = snapshot
        instance.last_error = snapshot["last_error"]
        instance.database_failures = 0
        if not snapshot["last_error"]:
            instance.failures = 0
        owner.set_state(instance, State.WATCHING)
        # serve() runs until this instance's scope is cancelled (or it fails).


def _leaf(error: BaseException) -> BaseException:
    """The one real error inside (nested) task-group exception groups."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
