"""One live instance under cluster ownership: STANDBY until owned, then run, then give back.

:func:`run_owned` is what the instance supervisor runs instead of the bare live run when
the daemon is a cluster member. While another daemon owns the instance it is STANDBY: no
flow is open, no watcher runs (a standby on shared storage costs the file server
nothing). Once :meth:`~cocod.daemon.cluster.Cluster.take` returns the lease, the live run
starts with the lease registered for its passes (each write transaction is fenced by its
epoch) and two watchers beside it:

* the lease's ``lost`` event (its session died, a heartbeat failed, or a newer epoch
  fenced a write) → :class:`OwnershipLost`: the updater is cancelled
  and the instance goes back to STANDBY (not counted as a failure);
* the balance: when this daemon is above its share, the instance is handed over between
  two passes, never during one.

Whatever ends the run, the lease is released within its own deadline (shielded), and the
standbys are woken by a notification, so a SIGTERM drain hands over at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator

import anyio
import structlog

from cocod.daemon.cluster import Cluster
from cocod.daemon.instance_state import Instance
from cocod.errors import CocodError
from cocod.runtime.coordination import coordination_for
from cocod.storage.leases import RELEASE_DEADLINE_S, FlowLease, LeaseHolder

log = structlog.get_logger(__name__)


class NotOwnerError(CocodError):
    """A command that writes an instance reached a daemon that does not own it."""

    def __init__(self, message: str, owner: LeaseHolder | None = None) -> None:
        super().__init__(message)
        self.owner = owner


class OwnershipLost(Exception):
    """The instance's lease was lost or handed over: its updater must stop now."""


async def watch_lease(lease: FlowLease) -> None:
    """Raise :class:`OwnershipLost` when the lease is lost (run beside the updater)."""
    await lease.lost.wait()
    raise OwnershipLost(lease.lost_reason or "the lease was lost")


def not_owner(name: str, owner: LeaseHolder | None) -> NotOwnerError:
    who = owner.describe() if owner is not None else "no daemon yet (it is being taken over)"
    return NotOwnerError(
        f"instance {name!r} is owned by {who}, not by this daemon; send the command to that "
        "daemon's socket (`cocod --socket PATH ...` on its host), or wait for `cocod status` "
        "to show this daemon as its owner",
        owner,
    )


HoldForPasses = Callable[[str, FlowLease], contextlib.AbstractContextManager[None]]
"""Registers the lease so the instance's passes (and setup) write under it, not a new one."""


@contextlib.contextmanager
def hold_in_coordination(flow_name: str, lease: FlowLease) -> Iterator[None]:
    """The process-wide registration (:attr:`FlowCoordination.held_lease`): every pass,
    setup and drop of the flow in this process writes under the owner's lease."""
    coordination = coordination_for(flow_name)
    coordination.held_lease = lease
    try:
        yield
    finally:
        if coordination.held_lease is lease:
            coordination.held_lease = None


async def run_owned(
    instance: Instance,
    cluster: Cluster,
    flow_name: str,
    *,
    standby: Callable[[], None],
    run_live: Callable[[], Awaitable[None]],
    hold_for_passes: HoldForPasses = hold_in_coordination,
) -> None:
    """Run ``instance`` while this daemon owns it; raises OwnershipLost when it stops
    owning it (the supervisor then calls this again: STANDBY, poll, maybe own again)."""
    standby()
    lease = await cluster.take(instance.name, flow_name)
    try:
        with hold_for_passes(flow_name, lease):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_lease, lease)
                tg.start_soon(_hand_over, cluster, instance)
                await run_live()
    finally:
        with anyio.move_on_after(RELEASE_DEADLINE_S + 1.0, shield=True):
            await cluster.release(instance.name, lease)


async def _hand_over(cluster: Cluster, instance: Instance) -> None:
    def is_between_passes() -> bool:
        return instance.updater is not None and instance.progress.running() is None

    await cluster.hand_over_when_due(instance.name, is_between_passes)
    log.info("instance.handed_over", instance=instance.name)
    raise OwnershipLost("handed over to balance the daemons' shares")


__all__ = [
    "HoldForPasses",
    "NotOwnerError",
    "OwnershipLost",
    "hold_in_coordination",
    "not_owner",
    "run_owned",
    "watch_lease",
]
