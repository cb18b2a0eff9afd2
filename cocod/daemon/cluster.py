"""Ownership of live instances across daemons that share one PostgreSQL.

PostgreSQL is the whole coordination engine; nothing here talks to another daemon:

* **Membership.** Each daemon has a row in ``cocod.daemons``
  (:mod:`cocod.daemon.cluster_table`), refreshed every ``lease_timeout / 3``. The live rows
  (heartbeat younger than ``lease_timeout``) and their weights give each daemon its fair
  share: ``ceil(live instances × weight / total weight)``.
* **Ownership.** A daemon owns a live instance while it holds the flow's lease
  (:mod:`cocod.storage.leases`: a session advisory lock on a dedicated connection and an
  epoch that fences every write). The others keep the instance as STANDBY — no watcher,
  no pass — and :meth:`Cluster.take` polls ``try_acquire`` with capped, jittered backoff,
  woken early by ``NOTIFY cocod_cluster`` when an owner hands an instance back.
* **Failover.** A killed owner's session ends and PostgreSQL drops its lock at once: the
  next poll takes it. A *stopped* owner (SIGSTOP, a frozen VM) keeps its session, so a
  standby checks the lease row's heartbeat and the owner daemon's: both older than
  ``lease_timeout`` → it ends that session with ``pg_terminate_backend`` and takes the
  lease; the new epoch makes every later write of the old owner fail (the fence).
  Leases held by a CLI or library process (``holder_kind`` other than ``daemon``) are
  never ended this way: they have no daemon heartbeat to judge them by.
* **Balance.** An owner above its share hands one instance back at a time, only between
  passes (:meth:`Cluster.hand_over_when_due`), so a daemon joining takes its share within
  about two heartbeats.

Each owned instance holds one dedicated connection (its lease) and each standby opens a
short-lived one per poll; see docs/scale-out.md for the limits that follow.
"""

from __future__ import annotations

import math
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus

from cocod.daemon.cluster_listen import ClusterListener
from cocod.daemon.cluster_table import DaemonRow, DaemonsTable
from cocod.daemon.lease_beats import heartbeat_leases
from cocod.errors import CocodError
from cocod.storage.internal_schema import ensure_internal_schema
from cocod.storage.leases import (
    Connector,
    FlowLease,
    LeaseHolder,
    reserve_flow_id,
    resolve_flow_id,
    try_acquire,
)
from cocod.storage.pool import Pool

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "cocod_cluster"
"""``NOTIFY`` channel: ``lease`` (an instance was handed back), ``left`` (a daemon
deregistered), ``registry`` (an instance was added or removed)."""
DEREGISTER_DEADLINE_S = 3.0
FIRST_POLL_S = 0.1
LOOP_MIN_GAP_S = 0.1
HAND_OVER_GRACE_BEATS = 3
"""A daemon leaves an instance it handed over to the others for this many heartbeats."""


def fair_share(instances: int, weight: int, total_weight: int) -> int:
    """At most this many of ``instances`` for a daemon of ``weight`` (ceil, so the shares
    of all live daemons cover every instance)."""
    if instances <= 0:
        return 0
    return math.ceil(instances * weight / max(total_weight, weight, 1))


class Cluster:
    """This daemon's membership, its owned leases and the standby polls."""

    def __init__(
        self,
        pool: Pool,
        connector: Connector,
        schema: str,
        *,
        lease_timeout: float,
        weight: int,
        version: str,
    ) -> None:
        self.pool = pool
        self.connector = connector
        self.schema = schema
        self.lease_timeout = lease_timeout
        self.weight = weight
        self.version = version
        self.daemon_id = uuid.uuid4().hex[:12]
        self.holder = LeaseHolder(socket.gethostname(), os.getpid(), self.daemon_id, "daemon")
        self.table = DaemonsTable(schema)
        self.members: list[DaemonRow] = []
        """The live daemons at the last heartbeat (this one included)."""
        self.owners: dict[str, LeaseHolder] = {}
        """Instance name → who held its lease at the last heartbeat (for ``status``)."""
        self.count_instances: Callable[[], int] = lambda: 0
        """How many live instances exist (the daemon sets it: its registry's count)."""
        self.instance_flows: Callable[[], dict[str, str]] = dict
        """Live instance name → full flow name (the daemon sets it), so ``status`` can
        name the owner of instances this daemon has not tried to take yet."""
        self.on_registry_changed: Callable[[], Awaitable[None]] = _nothing
        """Called on a ``registry`` notification and at every heartbeat (the periodic
        re-read that also covers a missed notification)."""
        self._owned: dict[str, FlowLease] = {}
        self._taking: set[str] = set()
        self._handed_over: dict[str, float] = {}
        """Instance → until when this daemon does not try to take back what it gave."""
        self._flow_ids: dict[str, int] = {}
        self._wake = anyio.Event()
        self._loop_wake = anyio.Event()
        self._registry_pending = False
        self._beat_pending = False
        self.listener = ClusterListener(connector, self.daemon_id)
        """LISTEN (``cocod_cluster`` and the channels others add) and the membership lock."""
        self.listener.channels[NOTIFY_CHANNEL] = self._on_cluster_notify

    @property
    def interval(self) -> float:
        return self.lease_timeout / 3

    # -- membership ----------------------------------------------------------------------
    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Register, then heartbeat until cancelled; the row is deleted on the way out."""
        row = (self.daemon_id, self.holder.host, self.holder.pid, self.weight, self.version)
        failures = 0
        while True:
            try:
                async with self.pool.acquire() as conn:
                    await self.table.ensure(conn)
                    await self.table.register(conn, *row)
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, CocodError) as e:
                # The database went away right after start-up reached it: wait, not exit.
                failures += 1
                delay = min(self.interval * 2.0 ** min(failures - 1, 8), 30.0)
                delay *= random.uniform(0.5, 1.0)
                log.warning("cluster.join_failed", error=str(e), retry_in=round(delay, 2))
                await anyio.sleep(delay)
        await self.listener.open()
        log.info("cluster.joined", daemon=self.daemon_id, weight=self.weight)
        try:
            await self._beat(row)
            task_status.started()
            next_beat = anyio.current_time() + self.interval
            while True:
                woken = self._loop_wake
                with anyio.move_on_after(max(0.0, next_beat - anyio.current_time())):
                    await woken.wait()
                self._loop_wake = anyio.Event()
                if self._registry_pending:
                    # Another daemon added or removed an instance: re-read now.
                    self._registry_pending = False
                    await self.on_registry_changed()
                if self._beat_pending or anyio.current_time() >= next_beat:
                    # A daemon left or handed an instance back: shares changed now.
                    self._beat_pending = False
                    await self._beat(row)
                    next_beat = anyio.current_time() + self.interval * random.uniform(0.9, 1.0)
                # However many notifications arrive, the loop runs at most this often.
                await anyio.sleep(LOOP_MIN_GAP_S)
        finally:
            with anyio.move_on_after(DEREGISTER_DEADLINE_S, shield=True):
                await self._leave()

    async def _beat(self, row: tuple[str, str, int, int, str]) -> None:
        if not self.listener.is_open:
            await self.listener.open()
        try:
            async with self.pool.acquire() as conn:
                everyone = await self.table.heartbeat(conn, row, self.lease_timeout)
                self.owners = await self._read_owners(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, CocodError) as e:
            # The database supervisor handles outages; the leases' own sessions tell
            # their owners. Keep the last picture and try again next beat.
            log.warning("cluster.heartbeat_failed", error=f"{type(e).__name__}: {e}")
            return
        before = self.fair_share()
        self.members = [m for m in everyone if m.is_live(self.lease_timeout)]
        if all(m.daemon_id != self.daemon_id for m in self.members):
            mine = [m for m in everyone if m.daemon_id == self.daemon_id]
            self.members.extend(mine[:1])
        # A lost one is marked so; its instance task sees ``lost`` and stands by.
        await heartbeat_leases(self.pool, self.schema, list(self._owned.values()))
        if self.fair_share() != before:
            log.info("cluster.share", share=self.fair_share(), daemons=len(self.members))
        await self.on_registry_changed()
        self._poke()

    async def _read_owners(self, conn: Any) -> dict[str, LeaseHolder]:
        for name, flow_name in self.instance_flows().items():
            if name not in self._flow_ids:
                flow_id = await resolve_flow_id(conn, self.schema, flow_name)
                if flow_id is not None:
                    self._flow_ids[name] = flow_id
        if not self._flow_ids:
            return {}
        names = {flow_id: name for name, flow_id in self._flow_ids.items()}
        holders = await self.table.lease_holders(conn, list(names))
        return {names[flow_id]: holder for flow_id, holder in holders.items() if flow_id in names}

    def _on_cluster_notify(self, payload: str) -> None:
        if payload == "registry":
            self._registry_pending = True
        else:
            self._beat_pending = True
        self._loop_wake.set()
        self._poke()

    async def _leave(self) -> None:
        try:
            async with self.pool.acquire() as conn:
                await self.table.deregister(conn, self.daemon_id)
                # The others recompute their shares now, not at their next heartbeat.
                await conn.execute("SELECT pg_notify($1, 'left')", NOTIFY_CHANNEL)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, CocodError) as e:
            log.warning("cluster.leave_failed", error=str(e))  # swept later by the others
        self.listener.close()
        log.info("cluster.left", daemon=self.daemon_id)

    async def notify(self, payload: str) -> None:
        """Wake the other daemons (``lease``: an instance is free; ``registry``: re-read)."""
        try:
            async with self.pool.acquire() as conn:
                await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, payload)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, CocodError) as e:
            log.debug("cluster.notify_failed", error=str(e))  # they poll anyway

    def _poke(self) -> None:
        self._wake.set()
        self._wake = anyio.Event()

    # -- shares ----------------------------------------------------------------------------
    def total_weight(self) -> int:
        total = sum(m.weight for m in self.members if m.daemon_id != self.daemon_id)
        return total + self.weight

    def fair_share(self) -> int:
        return fair_share(self.count_instances(), self.weight, self.total_weight())

    def owned_count(self) -> int:
        return len(self._owned)

    def owns(self, name: str) -> bool:
        lease = self._owned.get(name)
        return lease is not None and lease.is_held

    def owner_of(self, name: str) -> LeaseHolder | None:
        """Who owns ``name``: this daemon, or the holder seen at the last heartbeat."""
        if self.owns(name):
            return self.holder
        return self.owners.get(name)

    def _has_room(self) -> bool:
        return len(self._owned) + len(self._taking) < self.fair_share()

    # -- taking and handing back -----------------------------------------------------------
    async def take(self, name: str, flow_name: str) -> FlowLease:
        """Wait (STANDBY) until this daemon may own ``name`` and holds its lease (a flow
        never set up is keyed by its reserved id; its owner then sets it up)."""
        attempt = 0
        while True:
            # Just handed over: leave it to the daemon it was handed to for a while.
            handed_until = self._handed_over.get(name, 0.0)
            if anyio.current_time() >= handed_until and self._has_room():
                self._handed_over.pop(name, None)
                self._taking.add(name)
                try:
                    lease = await self._try_take(name, flow_name)
                finally:
                    self._taking.discard(name)
                if lease is not None:
                    self._owned[name] = lease
                    self.owners[name] = self.holder
                    log.info("cluster.owned", instance=name, epoch=lease.epoch)
                    return lease
            delay = min(self.interval, FIRST_POLL_S * 2.0 ** min(attempt, 16))
            attempt += 1
            wake = self._wake
            with anyio.move_on_after(delay * random.uniform(0.5, 1.0)):
                await wake.wait()

    async def _try_take(self, name: str, flow_name: str) -> FlowLease | None:
        flow_id = self._flow_ids.get(name)
        if flow_id is None:
            flow_id = self._flow_ids[name] = await self._flow_id(flow_name)
        lease = await try_acquire(self.connector, flow_id, self.holder, schema=self.schema)
        if lease is None and await self._end_stale_owner(name, flow_id):
            lease = await try_acquire(self.connector, flow_id, self.holder, schema=self.schema)
        return lease

    async def _flow_id(self, flow_name: str) -> int:
        """The flow's id: its setup record's, or the one reserved for its first setup
        (every daemon reads back the same reservation, so they contend for one lease and
        only the owner sets the flow up)."""
        async with self.pool.acquire() as conn:
            flow_id = await resolve_flow_id(conn, self.schema, flow_name)
            if flow_id is not None:
                return flow_id
            await ensure_internal_schema(conn, self.schema)
            return await reserve_flow_id(conn, self.schema, flow_name)

    async def _end_stale_owner(self, name: str, flow_id: int) -> bool:
        """End the lease session of a daemon that stopped heartbeating (SIGSTOP, frozen
        host), so its lock frees now rather than when its TCP connection times out."""
        async with self.pool.acquire() as conn:
            stale = await self.table.stale_lease_session(conn, flow_id, self.lease_timeout)
            if stale is None:
                return False
            ended = await self.table.end_session(conn, stale.backend_pid)
        log.warning(
            "cluster.stale_owner_ended",
            instance=name,
            owner=stale.holder.describe(),
            lease_age_s=round(stale.lease_age_s, 1),
            ended=ended,
        )
        return ended

    def claim_hand_over(self, name: str) -> bool:
        """True (and ``name`` no longer counts as owned) when this daemon should give
        ``name`` back; synchronous, so two of its tasks cannot both claim one release.

        Above its ceil share it always gives back. Above its floor share it gives back
        only while some live daemon is below *its* floor (a newcomer) and this daemon is
        the one furthest above its floor (ties: the lowest id), so one instance moves per
        need instead of every owner shedding one at once.
        """
        mine = len(self._owned)
        if name not in self._owned or len(self.members) < 2:
            return False
        if mine <= self.fair_share() and not self._should_feed_newcomer(mine):
            return False
        del self._owned[name]
        self._handed_over[name] = anyio.current_time() + HAND_OVER_GRACE_BEATS * self.interval
        log.info("cluster.hand_over", instance=name, owned=mine, share=self.fair_share())
        return True

    def _should_feed_newcomer(self, mine: int) -> bool:
        n, total = self.count_instances(), self.total_weight()
        counts: dict[str, int] = {}
        for holder in self.owners.values():
            if holder.daemon_id is not None:
                counts[holder.daemon_id] = counts.get(holder.daemon_id, 0) + 1
        counts[self.daemon_id] = mine

        def surplus(member_id: str, weight: int) -> int:
            return counts.get(member_id, 0) - (n * weight) // max(total, 1)

        if surplus(self.daemon_id, self.weight) <= 0:
            return False
        if not any(surplus(m.daemon_id, m.weight) < 0 for m in self.members):
            return False
        richest = max(
            self.members, key=lambda m: (surplus(m.daemon_id, m.weight), _neg(m.daemon_id))
        )
        return richest.daemon_id == self.daemon_id

    async def hand_over_when_due(self, name: str, is_between_passes: Callable[[], bool]) -> None:
        """Return once ``name`` should be handed over and no pass of it is running."""
        while True:
            wake = self._wake
            with anyio.move_on_after(self.interval * random.uniform(0.5, 1.0)):
                await wake.wait()
            if is_between_passes() and self.claim_hand_over(name):
                return

    async def release(self, name: str, lease: FlowLease) -> None:
        """Give the lease back and tell the standbys (bounded by the lease's deadline)."""
        if self._owned.get(name) is lease:
            del self._owned[name]
        await lease.release()
        if self.owners.get(name) == self.holder:
            del self.owners[name]
        await self.notify("lease")


def _neg(text: str) -> tuple[int, ...]:
    """A key that orders strings backwards (so ``max`` picks the lowest id on ties)."""
    return tuple(-ord(c) for c in text)


async def _nothing() -> None:
    return None


__all__ = [
    "NOTIFY_CHANNEL",
    "Cluster",
    "fair_share",
]
