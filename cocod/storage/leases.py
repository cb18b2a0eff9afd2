"""One writer per flow instance: a session advisory lock plus a fenced lease epoch.

Whoever writes a flow's rows (a pass, setup, drop) first takes its *lease*: a
PostgreSQL session-level advisory lock keyed by ``(LEASE_CLASSID, flow_id)`` on a
dedicated connection (never a pooled one, which would carry the lock back to the pool),
and, in the same statement, a bump of the flow's row in ``cocod.leases``::

    leases (flow_id PK, epoch bigint, holder_host, holder_pid, holder_daemon, holder_kind,
            acquired_at, heartbeat_at)

The row stays when the lock is released: its epoch only ever grows, and it says who held
the flow last (:func:`current_holder` asks ``pg_locks`` whether that holder still does).

Fencing, and why it is enough. The lock alone cannot stop a writer that lost its session
without noticing (a partition, a SIGSTOP): its pooled connections still work. So every
write transaction starts with :meth:`FlowLease.check`, in that same transaction::

    SELECT ... FROM cocod.leases WHERE flow_id = $1 AND epoch = $2 FOR SHARE

no row → :class:`LeaseLostError`, and the transaction rolls back. The timing argument:

1. A new owner can take the advisory lock only after the old owner's lease session ended
   (or released it). Its next statement, in the same round trip, updates the lease row
   (``epoch + 1``), which needs a row lock that conflicts with ``FOR SHARE``.
2. An old-owner transaction that passed its check holds ``FOR SHARE`` until it ends, so
   the bump *waits* for it: that commit lands entirely before the new epoch exists.
3. The bump commits before the new owner's first write (it is its own statement, in
   autocommit). Any old-owner check that starts later, or that was queued behind the
   bump, sees ``epoch + 1`` (READ COMMITTED rechecks the updated row) and finds no row.

So old-owner writes all commit before the bump, new-owner writes all start after it: no
two writers' transactions ever overlap, whatever the old owner knows, however late its
clock or its ``SIGCONT``. The old owner learns it lost the lease from its dedicated
connection dying (``lost`` is set by asyncpg's termination listener, no polling), from
:meth:`FlowLease.heartbeat`, or at the latest from its next commit failing.

The check also sets ``cocod.lease_epoch`` and ``cocod.lease_holder`` for the
transaction (``set_config(..., true)``), so a trigger on a target can log which epoch and
holder wrote each row (the tests' write log does).
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import asyncpg
import structlog

from cocod.errors import FlowBusyError, LeaseError, LeaseLostError, SetupOutOfDateError
from cocod.flow.naming import quote_ident
from cocod.storage.flow_ids import forget_reserved_flow_id, reserve_flow_id, resolve_flow_id
from cocod.storage.lease_table import ensure_leases_table, lease_table, leases_table_statement
from cocod.storage.pool import Connection, connect, map_asyncpg_errors

log = structlog.get_logger(__name__)

LEASE_CLASSID = 0x636F636F
"""First key of every flow lease's advisory lock ('coco'); the second is the flow id."""
RELEASE_DEADLINE_S = 5.0
"""Releasing (unlock + close) never holds a shutdown longer; then the socket is cut."""
HEARTBEAT_TIMEOUT_S = 5.0
POLL_FIRST_S = 0.05
POLL_CAP_S = 1.0
"""Waiting for a busy lease polls with capped exponential backoff and jitter."""


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds (or last held) a lease, as the lease row records it."""

    host: str
    pid: int
    daemon_id: str | None
    kind: str  # "daemon", "cli" or "library"

    @classmethod
    def this_process(cls, kind: str, daemon_id: str | None = None) -> LeaseHolder:
        return cls(socket.gethostname(), os.getpid(), daemon_id, kind)

    def describe(self) -> str:
        daemon = f" (daemon {self.daemon_id})" if self.daemon_id else ""
        return f"host {self.host} pid {self.pid}{daemon}"


Connector = str | Callable[[], Awaitable[asyncpg.Connection]]
"""A database URL, or an async factory of new (unpooled) connections."""


async def _open(database: Connector) -> tuple[asyncpg.Connection, str | None]:
    """A lease session: a plain connection, no statement of its own (the take statement
    sets the session's ``synchronous_commit``, see :func:`_take_sql`)."""
    url = database if isinstance(database, str) else None
    conn = await connect(database) if isinstance(database, str) else await database()
    return conn, url


_FLOW_BY_ID = "SELECT $2::int AS id"
_FLOW_BY_NAME = (
    "SELECT (state ->> 'flow_id')::int AS id FROM {s}.setup_metadata "
    "WHERE flow_name = $2::text AND resource IN ('flow', 'flow_id') "
    "ORDER BY resource = 'flow' DESC LIMIT 1"
)


def _take_sql(schema: str, *, by_name: bool) -> str:
    """Resolve, lock and bump in one statement (one round trip once prepared).

    ``$2`` is the flow's id, or its full name looked up as :func:`resolve_flow_id` does.
    The row is written only when the lock was granted, and its update waits for
    old-owner transactions that hold ``FOR SHARE``. The statement returns (flow id or
    NULL when the name has no setup, epoch or NULL when another session holds the lock).

    It also turns ``synchronous_commit`` off for the session, before its own commit: an
    epoch bump's WAL flush was 10 of the ~14 ms a lease took, and WAL is replayed in
    order, so a crash that loses a bump loses every write made under it too, and the next
    owner bumps again from what survived. (A SET of its own was one more round trip; a
    startup-packet setting is refused by PgBouncer.)
    """
    t = lease_table(schema)
    flow = (_FLOW_BY_NAME if by_name else _FLOW_BY_ID).format(s=quote_ident(schema))
    return (
        f"WITH f AS ({flow}), "
        "l AS (SELECT f.id, pg_try_advisory_lock($1, f.id) AS ok, "
        "set_config('synchronous_commit', 'off', false) FROM f WHERE f.id IS NOT NULL), "
        f"taken AS (INSERT INTO {t} AS le (flow_id, epoch, holder_host, holder_pid, "
        "holder_daemon, holder_kind, acquired_at, heartbeat_at) "
        "SELECT l.id, 1, $3, $4, $5, $6, now(), now() FROM l WHERE l.ok "
        "ON CONFLICT (flow_id) DO UPDATE SET epoch = le.epoch + 1, "
        "holder_host = EXCLUDED.holder_host, holder_pid = EXCLUDED.holder_pid, "
        "holder_daemon = EXCLUDED.holder_daemon, holder_kind = EXCLUDED.holder_kind, "
        "acquired_at = now(), heartbeat_at = now() RETURNING le.epoch) "
        "SELECT (SELECT id FROM l), (SELECT epoch FROM taken)"
    )


class FlowLease:
    """A held lease: the dedicated connection holding the lock, and the epoch it fences.

    ``lost`` is set when the dedicated connection fails or a heartbeat finds the lease
    gone; :meth:`check` then refuses every further write without asking the database.
    """

    def __init__(
        self,
        conn: asyncpg.Connection,
        schema: str,
        flow_id: int,
        epoch: int,
        holder: LeaseHolder,
        url: str | None,
    ) -> None:
        self.flow_id = flow_id
        self.epoch = epoch
        self.holder = holder
        self.schema = schema
        self.lost = anyio.Event()
        self.lost_reason = ""
        self._conn = conn
        self._url = url
        self._released = False
        self._conn_lock = anyio.Lock()
        t = lease_table(schema)
        self._check_sql = (
            "SELECT set_config('cocod.lease_epoch', $2::bigint::text, true), "
            "set_config('cocod.lease_holder', $3::text, true) "
            f"FROM {t} WHERE flow_id = $1 AND epoch = $2::bigint FOR SHARE"
        )
        self._heartbeat_sql = (
            f"UPDATE {t} SET heartbeat_at = now() WHERE flow_id = $1 AND epoch = $2 RETURNING 1"
        )
        conn.add_termination_listener(self._on_terminated)

    @property
    def is_held(self) -> bool:
        return not self._released and not self.lost.is_set()

    def _on_terminated(self, _conn: object) -> None:
        if not self._released:
            self.mark_lost("its database session ended")

    def mark_lost(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()
            log.warning("flow.lease.lost", flow_id=self.flow_id, epoch=self.epoch, reason=reason)

    def _lost_error(self) -> LeaseLostError:
        why = "it was released" if self._released else self.lost_reason or "it was lost"
        return LeaseLostError(
            f"this process no longer holds the lease of flow id {self.flow_id} (epoch "
            f"{self.epoch}): {why}; nothing more was written, and another process may own "
            "the flow now - retry to wait for it"
        )

    async def check(self, conn: Connection) -> None:
        """The fence: run first in every write transaction (see the module docstring)."""
        if not self.is_held:
            raise self._lost_error()
        found = await conn.fetchrow(
            self._check_sql, self.flow_id, self.epoch, self.holder.daemon_id or ""
        )
        if found is None:
            self.mark_lost(f"another process took it over (epoch is past {self.epoch})")
            raise self._lost_error()

    async def heartbeat(self, timeout: float = HEARTBEAT_TIMEOUT_S) -> None:  # noqa: ASYNC109
        """Prove the lease is still ours (its session answers, its epoch is current) and
        record when; a failure marks it lost and raises :class:`LeaseLostError`."""
        if not self.is_held:
            raise self._lost_error()
        try:
            with anyio.fail_after(timeout):
                async with self._conn_lock:
                    found = await self._conn.fetchval(self._heartbeat_sql, self.flow_id, self.epoch)
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
            self.mark_lost(f"its session did not answer a heartbeat ({type(e).__name__}: {e})")
            self._conn.terminate()
            raise self._lost_error() from e
        if found is None:
            self.mark_lost(f"another process took it over (epoch is past {self.epoch})")
            raise self._lost_error()

    async def release(self) -> None:
        """Unlock and close the dedicated connection, within :data:`RELEASE_DEADLINE_S`.

        The explicit unlock (rather than just closing) frees the lock before this returns,
        so the next pass, here or elsewhere, takes it at once. Idempotent.
        """
        if self._released:
            return
        self._released = True
        with anyio.move_on_after(RELEASE_DEADLINE_S, shield=True) as scope:
            try:
                async with self._conn_lock:
                    if not self._conn.is_closed():
                        # No parameters: the simple protocol, one round trip, no prepare.
                        await self._conn.execute(
                            f"SELECT pg_advisory_unlock({LEASE_CLASSID}, {int(self.flow_id)})"
                        )
                        await self._conn.close(timeout=RELEASE_DEADLINE_S)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as e:
                log.debug("flow.lease.release_failed", flow_id=self.flow_id, error=str(e))
                self._conn.terminate()  # the server drops the lock with the session
        if scope.cancelled_caught:
            self._conn.terminate()


def _not_set_up(flow: str) -> SetupOutOfDateError:
    return SetupOutOfDateError(
        f"setup for flow {flow!r} is not up to date (it has none yet, so no lease to "
        "take); run `cocod setup` (or Flow.setup()) first"
    )


async def _try_take(
    conn: asyncpg.Connection, schema: str, flow: str | int, holder: LeaseHolder
) -> tuple[int, int | None]:
    """(flow id, epoch or None when busy); raises when a named flow has no setup."""
    by_name = isinstance(flow, str)
    sql = _take_sql(schema, by_name=by_name)
    args = (LEASE_CLASSID, flow, holder.host, holder.pid, holder.daemon_id, holder.kind)
    try:
        row = await conn.fetchrow(sql, *args)
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        # A database no setup has touched since leases existed (or at all). The lock may
        # have been granted before the statement failed (session locks ignore
        # rollbacks): drop it.
        await conn.execute("SELECT pg_advisory_unlock_all()")
        if by_name and not await conn.fetchval(
            "SELECT to_regclass($1) IS NOT NULL", f"{quote_ident(schema)}.setup_metadata"
        ):
            raise _not_set_up(str(flow)) from None
        await ensure_leases_table(conn, schema)
        row = await conn.fetchrow(sql, *args)
    if row is None or row[0] is None:
        raise _not_set_up(str(flow))
    return int(row[0]), None if row[1] is None else int(row[1])


async def try_acquire(
    database: Connector, flow: str | int, holder: LeaseHolder, *, schema: str = "cocod"
) -> FlowLease | None:
    """Take the lease of ``flow`` (a full flow name or its internal id) now, or None when
    another session holds it."""
    conn, url = await _open(database)
    try:
        with map_asyncpg_errors(url):
            flow_id, epoch = await _try_take(conn, schema, flow, holder)
    except BaseException:
        conn.terminate()
        raise
    if epoch is None:
        await _close(conn)
        return None
    return FlowLease(conn, schema, flow_id, epoch, holder, url)


async def acquire(
    database: Connector,
    flow: str | int,
    holder: LeaseHolder,
    *,
    schema: str = "cocod",
    wait: float | None = None,
    on_wait: Callable[[LeaseHolder], None] | None = None,
) -> FlowLease:
    """Take the lease, waiting up to ``wait`` seconds (None: as long as it takes).

    Polls ``pg_try_advisory_lock`` on one connection with capped exponential backoff and
    jitter (an advisory lock has no wake-up to wait on that a deadline could bound).
    ``on_wait`` hears the current holder once, so a CLI can say whom it waits for.
    Raises :class:`FlowBusyError`, naming the holder, when ``wait`` runs out.
    """
    conn, url = await _open(database)
    deadline = None if wait is None else anyio.current_time() + max(0.0, wait)
    told = False
    attempt = 0
    try:
        with map_asyncpg_errors(url):
            while True:
                flow_id, epoch = await _try_take(conn, schema, flow, holder)
                if epoch is not None:
                    return FlowLease(conn, schema, flow_id, epoch, holder, url)
                current = await current_holder(conn, flow_id, schema=schema)
                now = anyio.current_time()
                if deadline is not None and now >= deadline:
                    raise _busy(flow, current, waited=wait or 0.0)
                if current is not None and not told:
                    told = True
                    log.info("flow.lease.waiting", flow=str(flow), holder=current.describe())
                    if on_wait is not None:
                        on_wait(current)
                delay = min(POLL_CAP_S, POLL_FIRST_S * 2.0 ** min(attempt, 16))
                delay *= random.uniform(0.75, 1.0)
                attempt += 1
                if deadline is not None:
                    delay = min(delay, max(0.0, deadline - now))
                await anyio.sleep(delay)
    except BaseException:
        conn.terminate()
        raise


def _busy(flow: str | int, holder: LeaseHolder | None, *, waited: float) -> FlowBusyError:
    who = holder.describe() if holder is not None else "another process"
    name = f"flow {flow!r}" if isinstance(flow, str) else f"flow id {flow}"
    after = f" after waiting {waited:g} s" if waited else ""
    return FlowBusyError(
        f"{name} is being written by {who}{after}; wait for it to finish (run without "
        "--no-wait), or stop that process",
        holder,
    )


async def current_holder(
    conn: Connection, flow_id: int, *, schema: str = "cocod"
) -> LeaseHolder | None:
    """Who holds the flow's lease now, from its row, or None when nobody does."""
    try:
        row = await conn.fetchrow(
            "SELECT holder_host, holder_pid, holder_daemon, holder_kind "
            f"FROM {lease_table(schema)} WHERE flow_id = $2 AND EXISTS (SELECT 1 FROM pg_locks "
            "WHERE locktype = 'advisory' AND classid = $1::int::oid AND objid = $2::int::oid "
            "AND objsubid = 2 AND granted AND database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()))",
            LEASE_CLASSID,
            flow_id,
        )
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return None
    if row is None:
        return None
    return LeaseHolder(row[0], int(row[1]), row[2], row[3])


async def _close(conn: asyncpg.Connection) -> None:
    with anyio.move_on_after(RELEASE_DEADLINE_S, shield=True) as scope:
        try:
            await conn.close(timeout=RELEASE_DEADLINE_S)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            conn.terminate()
    if scope.cancelled_caught:
        conn.terminate()


def lease_of(value: Any) -> FlowLease | None:
    """``value`` when it is a lease that is still held, else None (for optional holders)."""
    return value if isinstance(value, FlowLease) and value.is_held else None


__all__ = [
    "LEASE_CLASSID",
    "Connector",
    "FlowBusyError",
    "FlowLease",
    "LeaseError",
    "LeaseHolder",
    "LeaseLostError",
    "acquire",
    "current_holder",
    "ensure_leases_table",
    "forget_reserved_flow_id",
    "leases_table_statement",
    "reserve_flow_id",
    "resolve_flow_id",
    "try_acquire",
]
