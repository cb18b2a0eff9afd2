"""The ``cocod.cluster_requests`` table: commands a standby daemon forwards to the owner.

One row per forwarded command, written by the daemon that received it (``from_daemon``)
and served by whichever daemon owns the instance when it looks (``served_by``)::

    pending ──(the owner picks it: FOR UPDATE SKIP LOCKED)──► running ──► done | failed
       │                                                         │
       └──(the requester gives up)──► withdrawn    (its server died)──► pending again

A request is picked by the flow's full name, not by a daemon id, so a request queued for
an owner that dies meanwhile is picked by the next owner, whoever that is (the requester
itself included). ``SKIP LOCKED`` and the ``state = 'pending'`` guard make each transition
happen once, however many daemons look at once. Finished rows are deleted after a while
by whichever daemon cleans up next; so are rows nobody finished (a requester and its
server both gone).

PostgreSQL's ``now()`` is the only clock compared, as in :mod:`cocod.daemon.cluster_table`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cocod.daemon.cluster_table import MEMBER_CLASSID, create_once
from cocod.flow.naming import quote_ident
from cocod.storage.pool import Connection

FINISHED_KEPT_S = 600.0
"""A finished request's row is kept this long (for inspection), then deleted."""
UNFINISHED_KEPT_S = 86400.0
"""A request nobody finished in a day is deleted (its requester is long gone)."""


@dataclass(frozen=True)
class PickedRequest:
    """A request this daemon now serves."""

    id: int
    instance: str
    flow_name: str
    command: str
    args: dict[str, Any]


@dataclass(frozen=True)
class RequestState:
    """A request as its requester polls it."""

    state: str
    served_by: str | None
    reply: dict[str, Any] | None
    error_code: str | None
    error: str | None
    queued_age_s: float
    """Seconds since it was queued (or queued again), by the database's clock."""
    server_is_live: bool
    """Its server's membership lock is held and its heartbeat is fresh (True if none)."""
    progress: dict[str, Any] | None = None
    """The latest progress its server recorded (:meth:`RequestsTable.report_progress`)."""


class RequestsTable:
    """SQL on ``<schema>.cluster_requests``; every method takes the connection to run on."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.table = f"{quote_ident(schema)}.cluster_requests"
        self.daemons = f"{quote_ident(schema)}.daemons"

    async def ensure(self, conn: Connection) -> None:
        """Create it once, however many daemons start together on a fresh database."""
        await create_once(
            conn,
            self.schema,
            self.table,
            f"CREATE TABLE IF NOT EXISTS {self.table} (id bigserial PRIMARY KEY, "
            "instance text NOT NULL, flow_name text NOT NULL, command text NOT NULL, "
            "args jsonb NOT NULL, from_daemon text NOT NULL, "
            "created timestamptz NOT NULL DEFAULT now(), "
            "queued timestamptz NOT NULL DEFAULT now(), "
            "state text NOT NULL DEFAULT 'pending', served_by text, "
            "picked timestamptz, finished timestamptz, reply jsonb, "
            "error_code text, error text, progress jsonb)",
            "CREATE INDEX IF NOT EXISTS cluster_requests_pending ON "
            f"{self.table} (flow_name, id) WHERE state = 'pending'",
        )
        # A table an older cocod created has no progress column. Looked up first: an
        # ALTER takes the table's exclusive lock even when there is nothing to add.
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) "
            "AND attname = 'progress' AND NOT attisdropped)",
            self.table,
        ):
            await conn.execute(f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS progress jsonb")

    async def insert(
        self,
        conn: Connection,
        instance: str,
        flow_name: str,
        command: str,
        args: dict[str, Any],
        from_daemon: str,
    ) -> int:
        return int(
            await conn.fetchval(
                f"INSERT INTO {self.table} (instance, flow_name, command, args, from_daemon) "
                "VALUES ($1, $2, $3, $4::jsonb, $5) RETURNING id",
                instance,
                flow_name,
                command,
                args,  # the pool's jsonb codec encodes it
                from_daemon,
            )
        )

    async def pick(
        self,
        conn: Connection,
        flow_names: list[str],
        daemon_id: str,
        *,
        max_age_s: float,
        limit: int = 8,
    ) -> list[PickedRequest]:
        """Take pending requests of these flows; each is picked by one daemon only.

        None queued more than ``max_age_s`` ago (the pick timeout): its requester gave up
        on it (or could not withdraw it, the database being down), and running it hours
        later, behind the caller's back, would surprise more than help.
        """
        if not flow_names:
            return []
        rows = await conn.fetch(
            f"UPDATE {self.table} SET state = 'running', served_by = $2, picked = now() "
            f"WHERE id IN (SELECT id FROM {self.table} WHERE state = 'pending' "
            "AND flow_name = ANY($1) AND queued > now() - make_interval(secs => $4) "
            "ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) "
            "RETURNING id, instance, flow_name, command, args",
            flow_names,
            daemon_id,
            limit,
            max_age_s,
        )
        return [
            PickedRequest(int(r[0]), r[1], r[2], r[3], _json(r[4]) or {})
            for r in sorted(rows, key=lambda r: int(r[0]))
        ]

    async def finish(
        self,
        conn: Connection,
        request_id: int,
        daemon_id: str,
        *,
        reply: dict[str, Any] | None = None,
        error: tuple[str, str] | None = None,
        progress: dict[str, Any] | None = None,
    ) -> bool:
        """Record the outcome (and the last progress, if any), if this daemon still
        serves the request."""
        state = "done" if error is None else "failed"
        code, message = error if error is not None else (None, None)
        return bool(
            await conn.fetchval(
                f"UPDATE {self.table} SET state = $3, finished = now(), reply = $4::jsonb, "
                "error_code = $5, error = $6, progress = coalesce($7::jsonb, progress) "
                "WHERE id = $1 AND served_by = $2 AND state = 'running' RETURNING true",
                request_id,
                daemon_id,
                state,
                reply,
                code,
                message,
                progress,
            )
        )

    async def report_progress(
        self, conn: Connection, request_id: int, daemon_id: str, progress: dict[str, Any]
    ) -> None:
        """Record the running command's latest progress, if this daemon still serves it."""
        await conn.execute(
            f"UPDATE {self.table} SET progress = $3::jsonb "
            "WHERE id = $1 AND served_by = $2 AND state = 'running'",
            request_id,
            daemon_id,
            progress,
        )

    async def read(self, conn: Connection, request_id: int, lease_timeout: float) -> RequestState:
        row = await conn.fetchrow(
            "SELECT r.state, r.served_by, r.reply, r.error_code, r.error, r.progress, "
            "extract(epoch FROM now() - r.queued)::float8, r.served_by IS NULL OR ("
            "d.heartbeat > now() - make_interval(secs => $3) AND EXISTS (SELECT 1 "
            "FROM pg_locks lk WHERE lk.locktype = 'advisory' AND lk.classid = $2::int::oid "
            "AND lk.objid = hashtext(r.served_by)::oid AND lk.objsubid = 2 AND lk.granted "
            "AND lk.database = (SELECT oid FROM pg_database WHERE datname = "
            f"current_database()))) FROM {self.table} r LEFT JOIN {self.daemons} d "
            "ON d.daemon_id = r.served_by WHERE r.id = $1",
            request_id,
            MEMBER_CLASSID,
            lease_timeout,
        )
        if row is None:  # deleted: only a day-old request is, so its requester gave up
            return RequestState("withdrawn", None, None, None, None, 0.0, True)
        return RequestState(
            row[0],
            row[1],
            _json(row[2]),
            row[3],
            row[4],
            float(row[6]),
            bool(row[7]),
            _json(row[5]),
        )

    async def requeue(self, conn: Connection, request_id: int, from_state: str) -> bool:
        """Back to pending (its server died, or gave it back): the next owner picks it."""
        return bool(
            await conn.fetchval(
                f"UPDATE {self.table} SET state = 'pending', served_by = NULL, picked = NULL, "
                "queued = now(), error_code = NULL, error = NULL, progress = NULL "
                "WHERE id = $1 AND state = $2 RETURNING true",
                request_id,
                from_state,
            )
        )

    async def withdraw(self, conn: Connection, request_id: int) -> bool:
        """Give up a request nobody picked; False when a daemon picked it meanwhile."""
        return bool(
            await conn.fetchval(
                f"UPDATE {self.table} SET state = 'withdrawn', finished = now() "
                "WHERE id = $1 AND state = 'pending' RETURNING true",
                request_id,
            )
        )

    async def clean_up(self, conn: Connection, max_age_s: float) -> int:
        """Withdraw the pending requests too old to be picked (``max_age_s``, as in
        :meth:`pick`: their requesters gave up), then delete the rows kept long enough;
        the number deleted."""
        await conn.execute(
            f"UPDATE {self.table} SET state = 'withdrawn', finished = now() "
            "WHERE state = 'pending' AND queued < now() - make_interval(secs => $1)",
            max_age_s,
        )
        status = await conn.execute(
            f"DELETE FROM {self.table} WHERE (finished IS NOT NULL AND finished < "
            "now() - make_interval(secs => $1)) OR created < now() - make_interval(secs => $2)",
            FINISHED_KEPT_S,
            UNFINISHED_KEPT_S,
        )
        return int(str(status).rsplit(" ", 1)[-1] or 0)


def _json(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    decoded = json.loads(value) if isinstance(value, str | bytes) else value
    return decoded if isinstance(decoded, dict) else {"value": decoded}


__all__ = ["PickedRequest", "RequestState", "RequestsTable"]
