"""Vector indexes dropped for an initial load, and the marker that makes it crash safe.

A pass that loads an empty table with at least :data:`INITIAL_LOAD_MIN_ROWS` source
rows drops the table's vector indexes first and builds them once at its end, so the rows
go in without an HNSW insert each (see :mod:`cocod.executors.postgres.vector_indexes`).

Crash consistency: the DROP INDEX commits in one transaction with a *marker*, a row
``deferred_indexes:<target key>`` of the flow in ``setup_metadata``; the build and the
marker's removal commit in another. Every snapshot therefore sees the index, or the
marker, never neither. The marker lives in ``setup_metadata`` because every pass, setup
and verify already reads the flow's rows there in one query (``read_setup_state``): a
fresh process's no-op update learns of it without another round trip. Whoever finds a
marker builds the index: the next pass (at its end), an explicit ``setup`` and
``verify --repair`` (a setup run only so that a pass can follow leaves it to that pass);
the build is ``CREATE INDEX IF NOT EXISTS``, so a second one does nothing. Setup's own
record write replaces every row of the flow, markers included, in the transaction that
builds them.

Only the flow's writer touches it: every transaction here runs the lease's fence first.
What this process knows of the markers is kept per lease (:func:`state_for`): under one
lease no other process writes the flow, so a marker read once stays true until this
process builds it; a new lease (retaken after a loss) reads them again.

A build that fails (a writer of someone else holds the table, the server is short of
memory) leaves the marker too; under one lease the next try waits a capped, jittered
exponential backoff (:func:`backoff_delay`), so a live updater's every small pass does not
wait the build's lock timeout again with the flow's passes queued behind it. A parallel
build that runs out of shared memory (a container's small ``/dev/shm``) is retried at
once, serially (:func:`run_build`).

A pass that is cancelled (the daemon drains, the instance is paused) does not build: a
big index can take longer than a drain's budget, and a build cut short by its deadline
is lost work. It leaves the marker; queries meanwhile scan the table (correct, slower),
and the next pass builds it.
"""

from __future__ import annotations

import random
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import asyncpg
import structlog

from cocod.errors import CocodError, DatabaseUnavailableError, LeaseError
from cocod.flow.naming import quote_ident
from cocod.storage.db_errors import is_unavailable_error
from cocod.storage.pool import Connection, Pool

log = structlog.get_logger(__name__)

INITIAL_LOAD_MIN_ROWS = 500
"""Source rows a pass must have to look at before it defers an empty table's indexes.

Why a threshold: deferring costs two DDL transactions, an ACCESS EXCLUSIVE lock on the
table and a build over the whole table at the end; for a handful of files (a new flow's
first few, a test) the inserts through the index cost less than that. At 500 files
(several thousand chunks) the inserts' HNSW cost (~0.6 ms of server CPU a chunk with an
8-dimension vector, more with real ones) is seconds, the build a fraction of it.
"""

MARKER_PREFIX = "deferred_indexes:"

Fence = Callable[[Connection], Awaitable[None]]


class Deferral(Protocol):
    """One table's deferrable indexes and their SQL
    (:class:`cocod.executors.postgres.vector_indexes.IndexDeferral`)."""

    @property
    def target_key(self) -> str: ...
    @property
    def display(self) -> str: ...
    @property
    def index_names(self) -> list[str]: ...
    def has_rows_sql(self) -> str: ...
    def drop_statements(self) -> list[str]: ...
    def build_statements(self, *, lock_timeout: bool = True, serial: bool = False) -> list[str]: ...


SHARED_MEMORY_SQLSTATES = ("53100", "53200")
"""``disk_full`` and ``out_of_memory``: what a parallel build short of dynamic shared
memory ("could not resize shared memory segment ... No space left on device") raises."""

BUILD_RETRY_BASE_S = 10.0
BUILD_RETRY_CAP_S = 600.0
"""The backoff of a failing build under one lease: 10 s after the first failure, doubling,
at most 10 minutes (each jittered by ±50%)."""


def backoff_delay(failures: int) -> float:
    """Seconds before the next try of a build that failed ``failures`` times in a row."""
    base: float = min(
        BUILD_RETRY_CAP_S, BUILD_RETRY_BASE_S * float(2 ** min(16, max(0, failures - 1)))
    )
    return base * (0.5 + random.random())


def _sqlstate(error: BaseException) -> str | None:
    seen: BaseException | None = error
    while seen is not None:
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            return state
        seen = seen.__cause__
    return None


async def run_build(
    conn: Connection, deferral: Deferral, *, lock_timeout: bool = True, flow_name: str = ""
) -> None:
    """Build one table's indexes inside the caller's transaction, each try in a savepoint.

    A build that fails for want of shared memory (the parallel build's; see
    :data:`SHARED_MEMORY_SQLSTATES`) is rolled back to its savepoint and tried once more
    without parallel workers; any other error, or a second failure, is the caller's.
    """
    try:
        async with conn.transaction():
            for statement in deferral.build_statements(lock_timeout=lock_timeout):
                await conn.execute(statement)
        return
    except (CocodError, asyncpg.PostgresError) as e:
        if _sqlstate(e) not in SHARED_MEMORY_SQLSTATES:
            raise
        log.warning(
            "flow.index_build_serial",
            flow=flow_name,
            table=deferral.display,
            error=str(e),
            hint="the parallel build ran out of shared memory (a container's /dev/shm?); "
            "building without parallel workers",
        )
    async with conn.transaction():
        for statement in deferral.build_statements(lock_timeout=lock_timeout, serial=True):
            await conn.execute(statement)


# -- the marker rows -------------------------------------------------------------------------


def markers_of(by_resource: Mapping[str, Any]) -> dict[str, list[str]]:
    """The markers among a flow's ``setup_metadata`` rows: target key → index names."""
    return {
        resource.removeprefix(MARKER_PREFIX): list(state.get("indexes", []))
        for resource, state in by_resource.items()
        if resource.startswith(MARKER_PREFIX)
    }


async def read_markers(conn: Connection, schema: str, flow_name: str) -> dict[str, list[str]]:
    rows = await conn.fetch(
        f"SELECT resource, state FROM {quote_ident(schema)}.setup_metadata "
        "WHERE flow_name = $1 AND starts_with(resource, $2)",
        flow_name,
        MARKER_PREFIX,
    )
    return markers_of({r["resource"]: r["state"] for r in rows})


async def write_marker(
    conn: Connection, schema: str, flow_name: str, target_key: str, index_names: list[str]
) -> None:
    await conn.execute(
        f"INSERT INTO {quote_ident(schema)}.setup_metadata (flow_name, resource, state) "
        "VALUES ($1, $2, $3) ON CONFLICT (flow_name, resource) DO UPDATE SET state = "
        "EXCLUDED.state",
        flow_name,
        MARKER_PREFIX + target_key,
        {"indexes": sorted(index_names)},
    )


async def delete_markers(
    conn: Connection, schema: str, flow_name: str, target_keys: Iterable[str]
) -> None:
    await conn.execute(
        f"DELETE FROM {quote_ident(schema)}.setup_metadata "
        "WHERE flow_name = $1 AND resource = ANY($2::text[])",
        flow_name,
        [MARKER_PREFIX + k for k in target_keys],
    )


# -- what this process knows, per lease --------------------------------------------------------


@dataclass
class LeaseDeferrals:
    """The markers of one flow as known under one lease, and this process's loads."""

    pending: dict[str, list[str]] | None = None  # None: not read under this lease yet
    loading: dict[str, int] = field(default_factory=dict)  # target key → passes loading it
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    failures: dict[str, int] = field(default_factory=dict)  # target key → builds failed
    retry_at: dict[str, float] = field(default_factory=dict)  # target key → monotonic time

    def is_due(self, key: str, now: float) -> bool:
        """Whether a pass may try to build ``key`` now (not within a failed build's backoff)."""
        return self.retry_at.get(key, 0.0) <= now

    def build_failed(self, keys: Iterable[str], now: float) -> None:
        for key in keys:
            self.failures[key] = self.failures.get(key, 0) + 1
            self.retry_at[key] = now + backoff_delay(self.failures[key])

    def forget(self, keys: Iterable[str]) -> None:
        """Built (or removed) by anyone: no marker, no backoff."""
        for key in keys:
            if self.pending is not None:
                self.pending.pop(key, None)
            self.failures.pop(key, None)
            self.retry_at.pop(key, None)


_by_lease: weakref.WeakKeyDictionary[object, LeaseDeferrals] = weakref.WeakKeyDictionary()


def state_for(lease: object) -> LeaseDeferrals:
    found = _by_lease.get(lease)
    if found is None:
        found = _by_lease[lease] = LeaseDeferrals()
    return found


def note_markers(lease: object, markers: Mapping[str, list[str]]) -> None:
    """Markers read under ``lease`` (the setup record a pass opened its store with); what
    this process already knows under it wins, since nobody else writes the flow."""
    state = state_for(lease)
    if state.pending is None:
        state.pending = {k: list(v) for k, v in markers.items()}


def note_built(lease: object, target_keys: Iterable[str]) -> None:
    """Setup or verify removed these markers under ``lease`` (built, or their targets
    are gone)."""
    state_for(lease).forget(target_keys)


async def build_indexes(
    conn: Connection,
    schema: str,
    flow_name: str,
    deferrals: Sequence[Deferral],
    fence: Fence | None,
    marker_keys: Iterable[str] | None = None,
) -> None:
    """Build the indexes and remove their markers (``marker_keys``, else the deferrals'
    targets), in one transaction."""
    async with conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = on")  # as setup: durable
        if fence is not None:
            await fence(conn)
        for deferral in deferrals:
            await run_build(conn, deferral, flow_name=flow_name)
        keys = [d.target_key for d in deferrals] if marker_keys is None else list(marker_keys)
        await delete_markers(conn, schema, flow_name, keys)


class InitialLoadGuard:
    """One pass's deferral (the engine's ``BulkLoad``): drop before the rows, build after.

    ``tables`` are the flow's deferrable targets; each is deferred when it has a marker
    already (an interrupted load: this pass finishes it) or when the pass has at least
    ``min_rows`` candidates and the table is empty. Sources of one flow load its tables
    together: the last of them to finish builds.
    """

    def __init__(
        self,
        pool: Pool,
        schema: str,
        flow_name: str,
        tables: Sequence[Deferral],
        lease: object,
        fence: Fence,
        min_rows: int = INITIAL_LOAD_MIN_ROWS,
    ) -> None:
        self.pool = pool
        self.schema = schema
        self.flow_name = flow_name
        self.tables = {t.target_key: t for t in tables}
        self.state = state_for(lease)
        self.fence = fence
        self.min_rows = min_rows
        self.joined: list[str] = []
        self.log = log.bind(flow=flow_name)

    async def before_writes(self, candidates: int) -> None:
        state = self.state
        if not self.tables or (candidates < self.min_rows and state.pending == {}):
            return  # the no-op and the small pass: nothing to ask the database
        if candidates < self.min_rows and state.pending is not None:
            # A small pass defers nothing new: it only joins the loads it knows of.
            for key in self.tables:
                if key in state.pending:
                    self._join(key)
            return
        async with state.lock, self.pool.acquire() as conn:
            if state.pending is None:
                state.pending = await read_markers(conn, self.schema, self.flow_name)
            for key, table in self.tables.items():
                if key in state.pending:
                    self._join(key)
                    continue
                if candidates < self.min_rows or await conn.fetchval(table.has_rows_sql()):
                    continue  # a small pass, or not an initial load: write through the index
                if await self._drop(conn, table):
                    state.pending[key] = table.index_names
                    self._join(key)

    def _join(self, key: str) -> None:
        self.joined.append(key)
        self.state.loading[key] = self.state.loading.get(key, 0) + 1

    async def _drop(self, conn: Connection, table: Deferral) -> bool:
        """Drop the indexes and write the marker in one transaction; False (write through
        the index) when it could not. The deferral is an optimisation: an error before
        the commit rolled everything back, so the pass goes on without it; only an error
        whose commit outcome is unknown (the COMMIT's own, a cancellation) makes the next
        pass read the markers again."""
        committing = False
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = on")  # the marker must last
                await self.fence(conn)
                for statement in table.drop_statements():
                    await conn.execute(statement)
                await write_marker(
                    conn, self.schema, self.flow_name, table.target_key, table.index_names
                )
                committing = True
        except (CocodError, asyncpg.PostgresError, OSError) as e:
            if committing:
                self.state.pending = None  # did it commit? the next pass reads the markers
                raise
            if isinstance(e, LeaseError | DatabaseUnavailableError) or is_unavailable_error(e):
                raise  # the pass cannot write either: it reports this itself
            say = self.log.info if _is_lock_timeout(e) else self.log.warning
            say(
                "flow.index_defer_skipped",
                table=table.display,
                reason=str(e),
            )
            return False
        except BaseException:  # cancelled: did it commit? the same question
            self.state.pending = None
            raise
        self.log.info("flow.index_deferred", table=table.display, indexes=table.index_names)
        return True

    async def after_writes(self, *, build: bool) -> None:
        """Leave this pass's tables; build those no other pass still loads, unless
        ``build`` is false (the pass was cancelled: the marker stays for the next one)."""
        state = self.state
        for key in self.joined:  # no await before this: it runs even when cancelled
            state.loading[key] -= 1
        joined, self.joined = self.joined, []
        if not build or not joined:
            return
        if not any(state.is_due(key, time.monotonic()) for key in joined):
            return  # within a failed build's backoff: no lock, no connection
        async with state.lock:
            pending = state.pending or {}
            now = time.monotonic()
            # Every declared index of the table, not only the marker's: the build is
            # IF NOT EXISTS, and what the flow declares now is what it should have.
            due = [
                self.tables[key]
                for key in dict.fromkeys(joined)
                if key in pending and state.loading.get(key, 0) == 0 and state.is_due(key, now)
            ]
            if not due:
                return
            keys = [d.target_key for d in due]
            try:
                async with self.pool.acquire() as conn:
                    await build_indexes(conn, self.schema, self.flow_name, due, self.fence)
            except (CocodError, asyncpg.PostgresError, OSError) as e:
                # The rows are in and correct; queries scan until a later pass builds.
                state.build_failed(keys, time.monotonic())
                self.log.warning(
                    "flow.index_build_failed",
                    tables=[d.display for d in due],
                    error=str(e),
                    retry_in_s=round(min(state.retry_at[k] for k in keys) - time.monotonic()),
                    hint="a later update pass retries it; setup or verify --repair builds it now",
                )
                return
            state.forget(keys)
            self.log.info("flow.index_built", tables=[d.display for d in due])


def _is_lock_timeout(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, asyncpg.LockNotAvailableError):
            return True
        seen = seen.__cause__
    return False
