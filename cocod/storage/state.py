"""The engine's state store: per-row tracking, and the commit that writes a batch of rows.

The tables are described (and created) in :mod:`cocod.storage.internal_schema`; the
per-flow setup records are in :mod:`cocod.storage.flow_records`; the memo's lookups,
marks and collection are in :mod:`cocod.storage.memo_store`, and which database errors a
retry may get past in :mod:`cocod.storage.db_errors`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import asyncpg

from cocod.engine.interfaces import ExportWrite, ListingDiff, Ordinal, RowCommit, TrackedRow
from cocod.errors import RowError
from cocod.flow.naming import quote_ident
from cocod.storage.db_errors import is_transient_error, is_unavailable_error
from cocod.storage.listing_state import TrackedListing
from cocod.storage.memo_store import MEMO_GC_DEADLINE_S, Fence, MemoStore, mark_orphans
from cocod.storage.pool import Connection

HINTS_PER_QUERY = 4096
"""Hinted keys per tracking lookup; each key is two index range scans."""


class TargetWriter(Protocol):
    """Writes one export's rows inside the row's transaction."""

    async def write(self, conn: Connection, write: ExportWrite) -> None: ...


def encode_key(key: str) -> bytes:
    """The stored form of a source key; a key that has no byte form is that row's error."""
    try:
        return key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as e:
        raise RowError(f"source key {key!r} cannot be stored ({e.reason}); rename the file") from e


def decode_key(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


class PostgresStateStore:
    """The engine's StateStore for one flow, plus the target writers its commits use."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        flow_id: int,
        writers: Mapping[str, TargetWriter],
        fence: Fence | None = None,
    ) -> None:
        self._pool = pool
        self._flow_id = flow_id
        self._writers = writers
        self._fence = fence
        """Run first in every write transaction (a lease's check, cocod.storage.leases):
        raising rolls the transaction back before anything is written."""
        s = quote_ident(schema)
        self._tracking = f"{s}.tracking"
        self._memo = MemoStore(pool, f"{s}.memo", self._tracking, flow_id)
        self._upsert_tracking_sql = (
            f"INSERT INTO {self._tracking} (flow_id, source_id, source_key, ordinal_mtime_ns, "
            "ordinal_size, content_fp, logic_fp, target_keys, memo_keys, uuids, processed_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now()) "
            "ON CONFLICT (flow_id, source_id, source_key) DO UPDATE SET "
            "ordinal_mtime_ns = EXCLUDED.ordinal_mtime_ns, ordinal_size = EXCLUDED.ordinal_size, "
            "content_fp = EXCLUDED.content_fp, logic_fp = EXCLUDED.logic_fp, "
            "target_keys = EXCLUDED.target_keys, memo_keys = EXCLUDED.memo_keys, "
            "uuids = EXCLUDED.uuids, processed_at = now()"
        )
        # One index range scan per bound pair; OFFSET 0 keeps the planner from flattening
        # the lateral subquery into a join it might hash over the whole source.
        self.near_keys_sql = (
            "SELECT t.source_key, t.ordinal_mtime_ns, t.ordinal_size, t.logic_fp "
            "FROM unnest($3::bytea[], $4::bytea[]) AS h(lo, hi) CROSS JOIN LATERAL ("
            "SELECT source_key, ordinal_mtime_ns, ordinal_size, logic_fp "
            f"FROM {self._tracking} WHERE flow_id = $1 AND source_id = $2 "
            "AND source_key >= h.lo AND source_key < h.hi OFFSET 0) AS t"
        )
        # (key, is listed): listed keys that are new or whose ordinal or logic changed,
        # and tracked keys the listing no longer has. Keys arrive as two JSON texts (ASCII
        # keys as they are, the others as the hex of their bytes) and their ordinals as
        # comma lists, all parsed by the server in C. No parameter is an array: asyncpg
        # looks up an array type's codec in the catalog (three more round trips) the
        # first time a connection uses it, which a fresh process's pass would pay here.
        listing = (
            "SELECT {key} AS key, u.m AS mtime, u.s AS size FROM unnest("
            "ARRAY(SELECT json_array_elements_text(${k}::json)), "
            "string_to_array(${m}, ',')::int8[], string_to_array(${s}, ',')::int8[]) "
            "AS u(k, m, s)"
        )
        self.diff_listing_sql = (
            "SELECT coalesce(l.key, t.source_key), l.key IS NOT NULL FROM ("
            + listing.format(key="convert_to(u.k, 'UTF8')", k=3, m=4, s=5)
            + " UNION ALL "
            + listing.format(key="decode(u.k, 'hex')", k=6, m=7, s=8)
            + ") AS l FULL JOIN (SELECT source_key, ordinal_mtime_ns, ordinal_size, logic_fp "
            f"FROM {self._tracking} WHERE flow_id = $1 AND source_id = $2) AS t "
            "ON t.source_key = l.key "
            "WHERE l.key IS NULL OR t.source_key IS NULL "
            "OR t.ordinal_mtime_ns IS DISTINCT FROM l.mtime "
            "OR t.ordinal_size IS DISTINCT FROM l.size OR t.logic_fp IS DISTINCT FROM $9"
        )
        # (key, mtime or NULL when the logic changed, size) of every tracked row: an
        # index-only scan of tracking_ordinals, read while the source is being listed.
        # Three arrays in one row, not a row per file: asyncpg then builds no Record per
        # file, which at 50,000 files was 30-50 ms of this process's CPU (the GIL the
        # stat() walk needs) against 7-10 ms. The aggregates read the same rows in the
        # same order, so the i-th elements belong together.
        self.listing_state_sql = (
            "SELECT array_agg(source_key), array_agg(CASE WHEN logic_fp IS NOT DISTINCT "
            "FROM $3 THEN ordinal_mtime_ns END), array_agg(ordinal_size) "
            f"FROM {self._tracking} WHERE flow_id = $1 AND source_id = $2"
        )

    @property
    def flow_id(self) -> int:
        return self._flow_id

    def with_fence(self, fence: Fence) -> PostgresStateStore:
        """This store with ``fence`` (a lease's ``check``) run first in each write
        transaction; it shares the lookup batching and the writers, so each pass keeps
        the lease it started under whatever lease a later pass takes."""
        view = copy.copy(self)
        view._fence = fence
        view._memo = self._memo.for_pass()
        return view

    def is_transient_error(self, error: BaseException) -> bool:
        return is_transient_error(error)

    def is_unavailable_error(self, error: BaseException) -> bool:
        return is_unavailable_error(error)

    def near_keys_args(self, source_id: int, near_keys: Sequence[str]) -> list[Any]:
        """Bounds for ``near_keys_sql``: each key itself, and the keys under it as a folder.

        ``[k, k || 0x00)`` holds only ``k``; ``[k || '/', k || '0')`` holds every key
        below the folder ``k`` ('0' is the byte after '/').
        """
        low: list[bytes] = []
        high: list[bytes] = []
        for key in dict.fromkeys(near_keys):
            try:
                b = key.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                continue  # never stored, so nothing is tracked at or under it
            low += (b, b + b"/")
            high += (b + b"\x00", b + b"0")
        return [self._flow_id, source_id, low, high]

    async def load_ordinals(
        self, source_id: int, near_keys: Sequence[str] | None = None
    ) -> dict[str, tuple[Ordinal | None, bytes | None]]:
        async with self._pool.acquire() as conn:
            if near_keys is None:
                rows = list(
                    await conn.fetch(
                        f"SELECT source_key, ordinal_mtime_ns, ordinal_size, logic_fp "
                        f"FROM {self._tracking} WHERE flow_id = $1 AND source_id = $2",
                        self._flow_id,
                        source_id,
                    )
                )
            else:
                rows = []
                keys = list(near_keys)
                for start in range(0, len(keys), HINTS_PER_QUERY):
                    args = self.near_keys_args(source_id, keys[start : start + HINTS_PER_QUERY])
                    rows.extend(await conn.fetch(self.near_keys_sql, *args))
        return {decode_key(r[0]): ((r[1], r[2]) if r[1] is not None else None, r[3]) for r in rows}

    async def diff_listing(
        self, source_id: int, listed: Mapping[str, Ordinal], logic_fp: bytes
    ) -> ListingDiff:
        """The listed keys whose tracking differs, and the tracked keys no longer listed.

        The whole listing goes to the server and one FULL JOIN against the source's
        tracking returns only what differs: the per-row comparison runs in Postgres
        (another core), and this process decodes the candidates, not every tracked row.
        A full join cannot be a nested loop, so the plan is a hash or merge join whatever
        the statistics say. Most keys travel as one JSON text and the ordinals as comma
        lists, because asyncpg checks each element of an array parameter against three
        abstract base classes in Python (measured: most of this call's time at 50,000
        files); keys that are not ASCII travel as a JSON text of their bytes in hex.

        A pass does not use this (it has the listing only after its walk, and then the
        server's part is on its path): it reads :meth:`load_listing_state` during the
        walk. This is the :class:`~cocod.engine.interfaces.StateStore` method for a
        caller that holds a listing already.
        """
        args, unstorable = self._split_listing(listed)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                self.diff_listing_sql, self._flow_id, source_id, *args, logic_fp
            )
        changed = [decode_key(r[0]) for r in rows if r[1]]
        changed += unstorable
        gone = [decode_key(r[0]) for r in rows if not r[1]]
        return ListingDiff(changed=changed, gone=gone)

    async def load_listing_state(self, source_id: int, logic_fp: bytes) -> TrackedListing:
        """What a full listing is compared with, fetched while the source is listed.

        The pass starts this before its stat() walk: the server reads the covering index
        while the walk runs on this side, and the comparison afterwards is one dict pop
        per tracked row (:meth:`TrackedListing.diff`). Sending the listing instead
        (:meth:`diff_listing`) makes the server parse and hash-join it after the walk,
        in series with it: measured at 50,000 files, 4-5 times the server CPU of this
        read, and all of it on the pass's path.
        """
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(self.listing_state_sql, self._flow_id, source_id, logic_fp)
            keys, mtimes, sizes = row if row is not None else (None, None, None)
            if not keys:  # an initial index: if the memo is empty too, lookups can only miss
                await self._memo.learn_if_empty(conn)
        return TrackedListing(keys or [], mtimes or [], sizes or [])

    def diff_listing_args(self, listed: Mapping[str, Ordinal]) -> list[Any]:
        """Parameters $3 to $8 of ``diff_listing_sql`` for a listing."""
        return self._split_listing(listed)[0]

    @staticmethod
    def _split_listing(listed: Mapping[str, Ordinal]) -> tuple[list[Any], list[str]]:
        ascii_keys: list[str] = []
        mtimes: list[int] = []
        sizes: list[int] = []
        other_keys: list[str] = []
        other_mtimes: list[int] = []
        other_sizes: list[int] = []
        unstorable: list[str] = []
        for key, (mtime, size) in listed.items():
            if key.isascii():
                ascii_keys.append(key)
                mtimes.append(mtime)
                sizes.append(size)
                continue
            try:
                other_keys.append(key.encode("utf-8", "surrogateescape").hex())
            except UnicodeEncodeError:
                unstorable.append(key)  # never tracked: processing reports its error
                continue
            other_mtimes.append(mtime)
            other_sizes.append(size)
        args: list[Any] = [
            json.dumps(ascii_keys),
            ",".join(map(str, mtimes)),
            ",".join(map(str, sizes)),
            json.dumps(other_keys),
            ",".join(map(str, other_mtimes)),
            ",".join(map(str, other_sizes)),
        ]
        return args, unstorable

    async def load_tracked_rows(self, source_id: int, keys: Sequence[str]) -> dict[str, TrackedRow]:
        stored: list[bytes] = []
        for key in keys:
            try:
                stored.append(key.encode("utf-8", "surrogateescape"))
            except UnicodeEncodeError:
                continue
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT t.source_key, t.ordinal_mtime_ns, t.ordinal_size, t.content_fp, "
                f"t.logic_fp, t.target_keys, t.memo_keys, t.uuids "
                f"FROM unnest($3::bytea[]) AS k(key) CROSS JOIN LATERAL (SELECT * FROM "
                f"{self._tracking} WHERE flow_id = $1 AND source_id = $2 "
                "AND source_key = k.key OFFSET 0) AS t",
                self._flow_id,
                source_id,
                stored,
            )
        return {
            decode_key(r["source_key"]): TrackedRow(
                ordinal=(r["ordinal_mtime_ns"], r["ordinal_size"])
                if r["ordinal_mtime_ns"] is not None
                else None,
                content_fp=r["content_fp"],
                logic_fp=r["logic_fp"],
                target_keys=r["target_keys"],
                memo_keys=list(r["memo_keys"]),
                uuids=r["uuids"],
            )
            for r in rows
        }

    async def commit_rows(self, commits: Sequence[RowCommit]) -> None:
        deletes: list[tuple[int, int, bytes]] = []
        upserts: list[tuple[Any, ...]] = []
        memo: dict[bytes, bytes] = {}
        for c in commits:
            stored_key = encode_key(c.key)
            memo.update(c.memo_entries)
            if c.tracked is None:
                deletes.append((self._flow_id, c.source_id, stored_key))
                continue
            t = c.tracked
            upserts.append(
                (
                    self._flow_id,
                    c.source_id,
                    stored_key,
                    t.ordinal[0] if t.ordinal else None,
                    t.ordinal[1] if t.ordinal else None,
                    t.content_fp,
                    t.logic_fp,
                    t.target_keys,
                    t.memo_keys,
                    t.uuids,
                )
            )
        # One delete and one upsert statement per export for the whole batch. Deletes go
        # first: if a key moved between two rows of the batch, the upsert wins.
        merged: dict[str, ExportWrite] = {}
        for c in commits:
            for export_name, write in c.writes.items():
                target = merged.setdefault(export_name, ExportWrite())
                target.deletes.extend(write.deletes)
                target.upserts.extend(write.upserts)
        used = {
            k
            for c in commits
            if c.tracked is not None and not c.is_refresh
            for k in c.tracked.memo_keys
            if k not in memo
        }
        released = {k for c in commits for k in c.released_memo_keys}
        async with self._pool.acquire() as conn, conn.transaction():
            if self._fence is not None:
                await self._fence(conn)
            for export_name, write in merged.items():
                await self._writers[export_name].write(conn, write)
            await self._memo.write(conn, memo, used)
            if upserts:
                await conn.executemany(self._upsert_tracking_sql, upserts)
            if deletes:
                await conn.executemany(
                    f"DELETE FROM {self._tracking} "
                    "WHERE flow_id = $1 AND source_id = $2 AND source_key = $3",
                    deletes,
                )
            if released:
                # After the tracking writes, so a key another row of this batch now uses
                # is seen as referenced.
                await self._memo.mark_orphans(conn, released)

    async def memo_lookup(self, fps: Sequence[bytes]) -> dict[bytes, bytes]:
        """Concurrent lookups from many rows share one query."""
        return await self._memo.lookup(fps)

    async def collect_memo_garbage(self, retention_seconds: float) -> int:
        """Delete entries orphaned for the retention period (see
        :meth:`MemoStore.collect`), fenced as every write is."""
        return await self._memo.collect(retention_seconds, self._fence)


__all__ = [
    "HINTS_PER_QUERY",
    "MEMO_GC_DEADLINE_S",
    "Fence",
    "PostgresStateStore",
    "RowCommit",
    "TargetWriter",
    "decode_key",
    "encode_key",
    "is_transient_error",
    "is_unavailable_error",
    "mark_orphans",
]
