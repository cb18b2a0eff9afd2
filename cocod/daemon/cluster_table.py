"""The ``cocod.daemons`` table (which daemons share this database, and since when), and
the cluster's reads of the lease rows (who holds what, whose session is stale).

Each daemon registers one row at start-up and refreshes its ``heartbeat`` every
``lease_timeout / 3``; a clean shutdown deletes it. It also holds a session advisory lock
keyed by its id (:data:`MEMBER_CLASSID`) on its LISTEN connection, so a killed daemon (its
sessions end with it) is seen dead at the next heartbeat of the others, not a whole
``lease_timeout`` later: ``alive`` in :class:`DaemonRow`. A row whose heartbeat is older than
``lease_timeout`` is a daemon that died (SIGKILL, a lost host) or stopped (SIGSTOP): it
counts for nobody's fair share, and a standby may end the lease sessions it left behind.
Rows dead for long are swept by whichever daemon heartbeats next. The ``version`` column
is there for rolling upgrades: ``status`` can show which daemons run which release.

PostgreSQL's own clock (``now()``) is the only clock compared, so skewed host clocks do
not matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from cocod.flow.naming import quote_ident
from cocod.storage.leases import LEASE_CLASSID, LeaseHolder
from cocod.storage.pool import Connection

MEMBER_CLASSID = 0x636F636D
"""First key of a daemon's membership lock ('cocm'); the second is hashtext(daemon_id)."""
SWEEP_AFTER_TIMEOUTS = 20
"""A row silent for this many lease timeouts is deleted (its daemon is long gone)."""


@dataclass(frozen=True)
class DaemonRow:
    """One registered daemon, as the table says."""

    daemon_id: str
    host: str
    pid: int
    started: datetime
    weight: int
    version: str
    age_s: float
    """Seconds since its last heartbeat, by the database's clock."""
    alive: bool
    """Its membership lock is held: its session is there (it may still be stopped)."""

    def is_live(self, lease_timeout: float) -> bool:
        return self.alive and self.age_s <= lease_timeout

    def describe(self) -> str:
        return f"host {self.host} pid {self.pid} (daemon {self.daemon_id})"


@dataclass(frozen=True)
class StaleLease:
    """A daemon's lease session whose lease and daemon heartbeats are both too old."""

    backend_pid: int
    holder: LeaseHolder
    lease_age_s: float


async def create_once(conn: Connection, schema: str, table: str, *ddl: str) -> None:
    """Run ``ddl`` unless ``table`` exists: one cheap check when it does, and under a
    transaction-level advisory lock keyed by the table's name when it does not, so daemons
    starting together on a fresh database create it once."""
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", table)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        for statement in ddl:
            await conn.execute(statement)


class DaemonsTable:
    """SQL on ``<schema>.daemons`` and what the cluster reads of ``<schema>.leases``; every
    method takes the connection to run on."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.table = f"{quote_ident(schema)}.daemons"
        self.leases = f"{quote_ident(schema)}.leases"

    async def ensure(self, conn: Connection) -> None:
        """Create it once, however many daemons start together on a fresh database."""
        await create_once(
            conn,
            self.schema,
            self.table,
            f"CREATE TABLE IF NOT EXISTS {self.table} (daemon_id text PRIMARY KEY, "
            "host text NOT NULL, pid integer NOT NULL, "
            "started timestamptz NOT NULL DEFAULT now(), "
            "heartbeat timestamptz NOT NULL DEFAULT now(), "
            "weight integer NOT NULL, version text NOT NULL)",
        )

    async def register(
        self, conn: Connection, daemon_id: str, host: str, pid: int, weight: int, version: str
    ) -> None:
        await conn.execute(
            f"INSERT INTO {self.table} (daemon_id, host, pid, weight, version) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (daemon_id) DO UPDATE SET "
            "heartbeat = now(), weight = EXCLUDED.weight, version = EXCLUDED.version",
            daemon_id,
            host,
            pid,
            weight,
            version,
        )

    async def heartbeat(
        self, conn: Connection, row: tuple[str, str, int, int, str], lease_timeout: float
    ) -> list[DaemonRow]:
        """Refresh our row (re-inserting it if a sweep took it) and read everyone's."""
        await self.register(conn, *row)
        await conn.execute(
            f"DELETE FROM {self.table} WHERE heartbeat < now() - make_interval(secs => $1)",
            lease_timeout * SWEEP_AFTER_TIMEOUTS,
        )
        return await self.read(conn)

    async def read(self, conn: Connection) -> list[DaemonRow]:
        rows = await conn.fetch(
            "SELECT daemon_id, host, pid, started, weight, version, "
            "extract(epoch FROM now() - heartbeat)::float8 AS age, EXISTS (SELECT 1 "
            "FROM pg_locks lk WHERE lk.locktype = 'advisory' AND lk.classid = $1::int::oid "
            "AND lk.objid = hashtext(d.daemon_id)::oid AND lk.objsubid = 2 AND lk.granted "
            "AND lk.database = (SELECT oid FROM pg_database WHERE datname = "
            f"current_database())) AS alive FROM {self.table} d ORDER BY started, daemon_id",
            MEMBER_CLASSID,
        )
        return [
            DaemonRow(
                r["daemon_id"],
                r["host"],
                int(r["pid"]),
                r["started"],
                int(r["weight"]),
                r["version"],
                float(r["age"]),
                bool(r["alive"]),
            )
            for r in rows
        ]

    async def deregister(self, conn: Connection, daemon_id: str) -> None:
        await conn.execute(f"DELETE FROM {self.table} WHERE daemon_id = $1", daemon_id)

    # -- the leases, as the cluster reads them ---------------------------------------------
    async def lease_holders(self, conn: Connection, flow_ids: list[int]) -> dict[int, LeaseHolder]:
        """Who holds each flow's lease now (its row, where its lock is granted)."""
        try:
            rows = await conn.fetch(
                "SELECT le.flow_id, le.holder_host, le.holder_pid, le.holder_daemon, "
                f"le.holder_kind FROM {self.leases} le JOIN pg_locks lk ON {_LOCK_OF_LEASE} "
                "WHERE le.flow_id = ANY($2)",
                LEASE_CLASSID,
                flow_ids,
            )
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            return {}
        return {int(r[0]): LeaseHolder(r[1], int(r[2]), r[3], r[4]) for r in rows}

    async def stale_lease_session(
        self, conn: Connection, flow_id: int, lease_timeout: float
    ) -> StaleLease | None:
        """The backend holding ``flow_id``'s lease when it is a daemon's and both its
        lease heartbeat and its daemon's heartbeat are older than ``lease_timeout``."""
        try:
            row = await conn.fetchrow(
                "SELECT lk.pid, le.holder_host, le.holder_pid, le.holder_daemon, "
                "extract(epoch FROM now() - le.heartbeat_at)::float8 "
                f"FROM {self.leases} le JOIN pg_locks lk ON {_LOCK_OF_LEASE} "
                f"LEFT JOIN {self.table} d ON d.daemon_id = le.holder_daemon "
                "WHERE le.flow_id = $2 AND le.holder_kind = 'daemon' "
                "AND le.heartbeat_at < now() - make_interval(secs => $3) "
                "AND (d.heartbeat IS NULL OR d.heartbeat < now() - make_interval(secs => $3))",
                LEASE_CLASSID,
                flow_id,
                lease_timeout,
            )
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            return None
        if row is None:
            return None
        return StaleLease(int(row[0]), LeaseHolder(row[1], int(row[2]), row[3], "daemon"), row[4])

    async def end_session(self, conn: Connection, backend_pid: int) -> bool:
        """``pg_terminate_backend``, waiting up to a second for the session to be gone."""
        return bool(await conn.fetchval("SELECT pg_terminate_backend($1, 1000)", backend_pid))


_LOCK_OF_LEASE = (
    "lk.locktype = 'advisory' AND lk.classid = $1::int::oid AND lk.objid = le.flow_id::oid "
    "AND lk.objsubid = 2 AND lk.granted AND lk.database = (SELECT oid FROM pg_database "
    "WHERE datname = current_database())"
)


__all__ = ["MEMBER_CLASSID", "DaemonRow", "DaemonsTable", "StaleLease"]
