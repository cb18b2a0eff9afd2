"""The cluster's own connection: LISTEN for the other daemons, and the membership lock.

A daemon keeps one dedicated connection (never a pooled one: returning it to the pool
would drop its LISTEN and its lock) for two things that both need a real session:

* ``LISTEN`` on the cluster's channels — ``cocod_cluster`` (an instance was handed back, a
  daemon left, the registry changed) and whatever else registers a channel before the
  connection opens (forwarded commands, :mod:`cocod.daemon.forwarding`);
* the daemon's membership lock (a session advisory lock keyed by its id): the others read
  it in ``pg_locks``, so a killed daemon — its sessions end with it — is seen dead at once.

Notifications are hints that wake a waiter early; every waiter also polls, so a lost
connection (reopened at the next heartbeat) or a lost NOTIFY costs only latency.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import structlog

from cocod.daemon.cluster_table import MEMBER_CLASSID
from cocod.errors import CocodError
from cocod.storage.leases import Connector

log = structlog.get_logger(__name__)

OnNotify = Callable[[str], None]
"""Called on the event loop with a notification's payload."""


class ClusterListener:
    """The LISTEN connection of one daemon, holding its membership lock."""

    def __init__(self, connector: Connector, daemon_id: str) -> None:
        self.connector = connector
        self.daemon_id = daemon_id
        self.channels: dict[str, OnNotify] = {}
        """Channel → callback; add before :meth:`open` (a reopen listens on all of them)."""
        self._conn: asyncpg.Connection | None = None

    @property
    def is_open(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def open(self) -> None:
        """(Re)open the connection: LISTEN on every channel, then take the membership lock.

        A failure is logged, not raised: polls alone still work, and the next heartbeat
        tries again (meanwhile the others see this daemon as dead and may take instances
        whose leases are free)."""
        self.close()
        conn: asyncpg.Connection | None = None
        try:
            conn = await _connect(self.connector)
            for channel, on_notify in self.channels.items():
                await conn.add_listener(channel, _callback(on_notify))
            await conn.execute(
                "SELECT pg_advisory_lock($1, hashtext($2))", MEMBER_CLASSID, self.daemon_id
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, CocodError) as e:
            log.warning("cluster.listen_failed", error=str(e))
            if conn is not None:
                conn.terminate()
            return
        self._conn = conn

    def close(self) -> None:
        """Drop the connection at once (the server releases the lock with the session)."""
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None


def _callback(on_notify: OnNotify) -> Callable[[object, object, object, object], None]:
    def callback(conn: object, pid: object, channel: object, payload: object) -> None:
        del conn, pid, channel
        on_notify(str(payload))

    return callback


async def _connect(connector: Connector) -> asyncpg.Connection:
    if isinstance(connector, str):
        from cocod.storage.pool import connect

        return await connect(connector)
    return await connector()


__all__ = ["ClusterListener", "OnNotify"]
