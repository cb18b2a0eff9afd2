"""The memo's side of the state store: batched lookups, the commit's memo statement,
orphan marks, and collection.

Memo collection costs what changed: a commit that releases memo keys marks those no other
tracking row references (``orphaned_at``) in the same transaction, and collection looks
only at marked entries. No process ever scans the whole memo. Its own module so the
tracking store (:mod:`cocod.storage.state`) reads as rows and the memo's rules read here.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence

import anyio
import asyncpg

from cocod.engine.batching import Batcher
from cocod.storage.pool import Connection

MEMO_GC_DEADLINE_S = 30.0
"""Memo collection is housekeeping: never hold a shutdown for longer than this."""

KNOWN_EMPTY_CAP = 65_536
"""Keys a pass that found the memo empty remembers writing before it looks up as usual
(about 100 bytes each; an initial index larger than this queries for the rest)."""

Fence = Callable[[Connection], Awaitable[None]]
"""Checked at the start of a write transaction; raises when this process may not write."""


def unreferenced(memo: str, tracking: str) -> str:
    """SQL: no tracking row of flow ``$1`` uses the memo row's key (the GIN index on
    tracking.memo_keys answers this per entry).

    The ``OFFSET 0`` keeps the flow's condition out of the index scan: otherwise the
    planner ANDs the GIN look-up with a bitmap of the flow's whole primary-key range,
    read once per entry, so marking or collecting k entries cost k × the corpus (43 ms
    for 109 entries at 5,000 files, against 3 ms this way). The few rows that use a key
    are filtered by flow afterwards. (``t.flow_id + 0`` instead was worse: the planner
    then often read the whole table once rather than the index per entry.)
    """
    return (
        f"NOT EXISTS (SELECT 1 FROM (SELECT t.flow_id FROM {tracking} t "
        f"WHERE t.memo_keys @> ARRAY[{memo}.fp] OFFSET 0) AS u WHERE u.flow_id = $1)"
    )


async def mark_orphans(
    conn: Connection, memo: str, tracking: str, flow_id: int, fps: Iterable[bytes]
) -> None:
    """Mark released entries that no tracking row references any more (same transaction)."""
    await conn.execute(
        f"UPDATE {memo} SET orphaned_at = now() WHERE flow_id = $1 AND fp = ANY($2::bytea[]) "
        f"AND orphaned_at IS NULL AND {unreferenced(memo, tracking)}",
        flow_id,
        sorted(fps),
    )


class MemoStore:
    """One flow's memo: lookups shared across rows, and what commits and collection run.

    A pass gets its own view (:meth:`for_pass`). A view that learns the flow's memo was
    empty when its pass started (:meth:`learn_if_empty`, asked by an initial index) skips
    the lookups that could only miss: the only entries that can appear while the pass
    holds the flow's lease are the ones this process writes, and every view that knows
    the memo was empty records them (``_written``), so a lookup still goes to the
    database for any of those. A skipped lookup that would have hit costs a recompute,
    never a wrong row: the memo only caches.
    """

    def __init__(self, pool: asyncpg.Pool, memo: str, tracking: str, flow_id: int) -> None:
        self._pool = pool
        self.memo = memo
        self.tracking = tracking
        self._flow_id = flow_id
        self._lookups = Batcher(self._lookup_batch, max_batch_size=8192)
        self._is_pass = False
        self._written: set[bytes] | None = None
        """Keys written since this pass found the memo empty; None: look everything up."""
        self._knowing_empty: weakref.WeakSet[MemoStore] = weakref.WeakSet()
        """The live pass views that skip lookups (shared by all views of this flow)."""
        # One statement for a batch's new entries (hundreds in an initial index; the keys
        # of a dict are distinct, as ON CONFLICT DO UPDATE requires) and for the entries
        # found by lookup, in use again: their retention clock restarts. The two sets are
        # disjoint, so the parts never meet on a row.
        self.upsert_sql = (
            f"WITH new AS (INSERT INTO {memo} (flow_id, fp, value) "
            "SELECT $1, u.fp, u.value "
            "FROM unnest($2::bytea[], $3::bytea[]) AS u(fp, value) "
            "ON CONFLICT (flow_id, fp) DO UPDATE "
            "SET value = EXCLUDED.value, orphaned_at = NULL RETURNING 1) "
            f"UPDATE {memo} SET orphaned_at = NULL WHERE flow_id = $1 "
            "AND fp = ANY($4::bytea[]) AND orphaned_at IS NOT NULL"
        )

    def for_pass(self) -> MemoStore:
        """A view for one pass (sharing the lookup batching), which may learn that the
        memo was empty at its start."""
        view = copy.copy(self)
        view._is_pass = True
        view._written = None
        return view

    async def learn_if_empty(self, conn: Connection) -> None:
        """Ask whether the flow's memo is empty now (one simple-protocol round trip); if so,
        this pass's lookups skip what nobody wrote since. Only a pass view learns: the
        lease it runs under keeps other processes from writing while it lasts."""
        if not self._is_pass or self._written is not None:
            return
        status = await conn.execute(
            f"SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM {self.memo} "
            f"WHERE flow_id = {int(self._flow_id)})"
        )
        if status == "SELECT 1":
            self._written = set()
            self._knowing_empty.add(self)

    async def write(self, conn: Connection, entries: dict[bytes, bytes], used: set[bytes]) -> None:
        """New entries and entries in use again, inside the commit's transaction."""
        if entries:
            # Recorded before the write: a lookup racing the commit then queries (and may
            # miss, as it would have a moment earlier), never skips.
            for view in list(self._knowing_empty):
                view._remember(entries)
        if entries or used:
            await conn.execute(
                self.upsert_sql, self._flow_id, list(entries), list(entries.values()), sorted(used)
            )

    def _remember(self, entries: Iterable[bytes]) -> None:
        if self._written is None:
            return
        self._written.update(entries)
        if len(self._written) > KNOWN_EMPTY_CAP:
            self._written = None  # too many to keep: look everything up from here on
            self._knowing_empty.discard(self)

    async def mark_orphans(self, conn: Connection, released: Iterable[bytes]) -> None:
        await mark_orphans(conn, self.memo, self.tracking, self._flow_id, released)

    async def lookup(self, fps: Sequence[bytes]) -> dict[bytes, bytes]:
        """Concurrent lookups from many rows share one query."""
        if self._written is not None:  # the memo was empty: only what was written since
            fps = [fp for fp in fps if fp in self._written]
            if not fps:
                return {}
        values = await self._lookups.submit(list(fps))
        return {fp: v for fp, v in zip(fps, values, strict=True) if v is not None}

    async def _lookup_batch(self, fps: list[bytes]) -> list[bytes | None]:
        found = await self._query(list(set(fps)))
        return [found.get(fp) for fp in fps]

    async def _query(self, fps: Sequence[bytes]) -> dict[bytes, bytes]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT fp, value FROM {self.memo} WHERE flow_id = $1 AND fp = ANY($2::bytea[])",
                self._flow_id,
                list(fps),
            )
        return {r[0]: r[1] for r in rows}

    async def collect(self, retention_seconds: float, fence: Fence | None) -> int:
        """Delete entries marked orphaned for the retention period that are still unused.

        Only marked entries are examined (commits mark what they release), so the cost
        follows what changed, in this process or an earlier one. Keeping orphans for a
        while lets a file that is renamed, or edited and restored, reuse its embeddings.
        An old mark on an entry some row uses again is cleared.
        """
        removed = 0
        # Shielded so a pooled connection is never left mid-transaction, with a deadline
        # so a stuck lock cannot hold a shutdown.
        with anyio.move_on_after(MEMO_GC_DEADLINE_S, shield=True):
            removed = await self._collect(float(retention_seconds), fence)
        return removed

    async def _collect(self, retention_seconds: float, fence: Fence | None) -> int:
        old_mark = (
            "flow_id = $1 AND orphaned_at IS NOT NULL "
            "AND orphaned_at <= now() - make_interval(secs => $2)"
        )
        free = unreferenced(self.memo, self.tracking)
        # One statement: the old marks nobody references go, the others are cleared (two
        # disjoint sets of rows, so both parts can share the statement's snapshot). A
        # fresh process's pass pays its prepare once instead of two statements' prepares.
        collect = (
            f"WITH gone AS (DELETE FROM {self.memo} WHERE {old_mark} AND {free} "
            f"RETURNING 1), kept AS (UPDATE {self.memo} SET orphaned_at = NULL "
            f"WHERE {old_mark} AND NOT {free} RETURNING 1) "
            "SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM kept)"
        )
        async with self._pool.acquire() as conn:
            if not await self._any_orphan_due(conn, retention_seconds):
                return 0
            async with conn.transaction():
                if fence is not None:
                    await fence(conn)
                row = await conn.fetchrow(collect, self._flow_id, retention_seconds)
        return int(row[0]) if row is not None else 0

    async def _any_orphan_due(self, conn: Connection, retention_seconds: float) -> bool:
        """Whether any marked entry is past its retention, asked outside a transaction.

        Most passes have none, and then the fenced transaction (begin, fence, collect,
        commit) is skipped. Only numbers are inlined, so the statement has no parameters
        and goes through the simple protocol: one round trip, no prepare; its status is
        ``SELECT 1`` or ``SELECT 0``. An entry marked after this read is younger than its
        retention, so skipping it loses nothing: a later pass collects it.
        """
        if not math.isfinite(retention_seconds):
            return False  # kept for ever (an infinite retention is not an SQL number)
        status = await conn.execute(
            f"SELECT 1 FROM {self.memo} WHERE flow_id = {int(self._flow_id)} "
            "AND orphaned_at IS NOT NULL "
            f"AND orphaned_at <= now() - make_interval(secs => {float(retention_seconds)!r}) "
            "LIMIT 1"
        )
        return status != "SELECT 0"


__all__ = [
    "KNOWN_EMPTY_CAP",
    "MEMO_GC_DEADLINE_S",
    "Fence",
    "MemoStore",
    "mark_orphans",
    "unreferenced",
]
