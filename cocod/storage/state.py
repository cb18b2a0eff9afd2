"""cocod's internal tables: setup records, per-row tracking, and the memo.

All flows share three tables in the internal schema (``cocod`` unless
``db_schema_name`` says otherwise), partitioned by a numeric ``flow_id``: no per-flow DDL,
no identifier-length limits on flow names, and dropping a flow is a few DELETEs.

    setup_metadata (flow_name, resource) → state jsonb      what setup last applied
    tracking (flow_id, source_id, source_key bytea)         one row per processed source row
    memo (flow_id, fp) → value bytea                         memoized function results

Source keys are stored as the file name's own bytes (``key.encode('utf-8',
'surrogateescape')``, what ``os.fsencode`` gives): Postgres text cannot hold the lone
surrogates a name that is not UTF-8 decodes to, and bytea compares byte-wise, so the keys
under a folder are one range scan of the primary key with no collation in the way.

Memo collection costs what changed: a commit that releases memo keys marks those no other
tracking row references (``orphaned_at``) in the same transaction, and collection looks
only at marked entries. No process ever scans the whole memo.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import anyio
import asyncpg

from cocod.engine.batching import Batcher
from cocod.engine.interfaces import ExportWrite, Ordinal, RowCommit, TrackedRow
from cocod.engine.setup import FlowRecord
from cocod.errors import DatabaseError, DatabaseUnavailableError, RowError
from cocod.flow.naming import quote_ident
from cocod.storage.pool import Connection

INTERNAL_SCHEMA_LOCK_KEY = 0x636F636F642D31
"""pg_advisory_xact_lock key serialising creation and migration of the internal tables."""
HINTS_PER_QUERY = 4096
"""Hinted keys per tracking lookup; each key is two index range scans."""
MEMO_GC_DEADLINE_S = 30.0
"""Memo collection is housekeeping: never hold a shutdown for longer than this."""


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


def internal_schema_statements(schema: str) -> list[str]:
    s = quote_ident(schema)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE IF NOT EXISTS {s}.setup_metadata (
            flow_name text NOT NULL,
            resource text NOT NULL,
            state jsonb NOT NULL,
            PRIMARY KEY (flow_name, resource))""",
        f"CREATE SEQUENCE IF NOT EXISTS {s}.flow_id_seq",
        f"""CREATE TABLE IF NOT EXISTS {s}.tracking (
            flow_id integer NOT NULL,
            source_id integer NOT NULL,
            source_key bytea NOT NULL,
            ordinal_mtime_ns bigint,
            ordinal_size bigint,
            content_fp bytea,
            logic_fp bytea,
            target_keys jsonb NOT NULL,
            memo_keys bytea[] NOT NULL,
            uuids jsonb NOT NULL,
            processed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (flow_id, source_id, source_key))""",
        f"CREATE INDEX IF NOT EXISTS tracking_memo_keys ON {s}.tracking USING gin (memo_keys)",
        f"""CREATE TABLE IF NOT EXISTS {s}.memo (
            flow_id integer NOT NULL,
            fp bytea NOT NULL,
            value bytea NOT NULL,
            orphaned_at timestamptz,
            PRIMARY KEY (flow_id, fp))""",
        f"CREATE INDEX IF NOT EXISTS memo_orphans ON {s}.memo (flow_id, orphaned_at) "
        "WHERE orphaned_at IS NOT NULL",
    ]


def _migration_statements(schema: str) -> list[str]:
    """From the first layout (text keys, orphans remembered per process) to this one."""
    s = quote_ident(schema)
    return [
        f"ALTER TABLE {s}.tracking ALTER COLUMN source_key TYPE bytea "
        "USING convert_to(source_key, 'UTF8')",
        # Releases used to be remembered in memory only: mark what they lost, once.
        f"UPDATE {s}.memo m SET orphaned_at = now() WHERE orphaned_at IS NULL AND NOT EXISTS "
        f"(SELECT 1 FROM {s}.tracking t WHERE t.flow_id = m.flow_id "
        "AND t.memo_keys @> ARRAY[m.fp])",
    ]


async def _key_column_type(conn: Connection, schema: str) -> str | None:
    """``bytea`` when the internal tables are current, ``text`` when they need migrating."""
    found = await conn.fetchval(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass($1) AND attname = 'source_key' AND NOT attisdropped",
        f"{quote_ident(schema)}.tracking",
    )
    return None if found is None else str(found)


async def ensure_internal_schema(conn: Connection, schema: str) -> bool:
    """Create or migrate the internal tables once, however many processes start together.

    Check first (one cheap query when all is done), then take a transaction-scoped
    advisory lock and check again: the processes that lose the race wait for the winner's
    commit and find nothing left to do, instead of colliding on CREATE TABLE.
    Returns whether this call changed anything.
    """
    if await _key_column_type(conn, schema) == "bytea":
        return False
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", INTERNAL_SCHEMA_LOCK_KEY)
        current = await _key_column_type(conn, schema)
        if current == "bytea":
            return False
        if current is not None:
            for stmt in _migration_statements(schema):
                await conn.execute(stmt)
        for stmt in internal_schema_statements(schema):
            await conn.execute(stmt)
    return True


async def internal_schema_exists(conn: Connection, schema: str) -> bool:
    found = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f"{quote_ident(schema)}.setup_metadata"
    )
    return bool(found)


async def read_flow_record(conn: Connection, schema: str, flow_name: str) -> FlowRecord | None:
    if not await internal_schema_exists(conn, schema):
        return None
    rows = await conn.fetch(
        f"SELECT resource, state FROM {quote_ident(schema)}.setup_metadata WHERE flow_name = $1",
        flow_name,
    )
    by_resource = {r["resource"]: r["state"] for r in rows}
    flow = by_resource.pop("flow", None)
    if flow is None:
        return None
    record = FlowRecord(
        flow_id=flow["flow_id"],
        sources=dict(flow.get("sources", {})),
        next_source_id=flow.get("next_source_id", 1),
    )
    for resource, state in by_resource.items():
        if resource.startswith("target:"):
            record.targets[resource.removeprefix("target:")] = state
    return record


async def list_flow_names(conn: Connection, schema: str) -> list[str]:
    if not await internal_schema_exists(conn, schema):
        return []
    rows = await conn.fetch(
        f"SELECT flow_name FROM {quote_ident(schema)}.setup_metadata "
        "WHERE resource = 'flow' ORDER BY flow_name"
    )
    return [r["flow_name"] for r in rows]


async def target_owners(
    conn: Connection, schema: str, keys: Sequence[str], except_flow: str
) -> dict[str, str]:
    """Which other flows already manage these targets (setup key → flow name)."""
    rows = await conn.fetch(
        f"SELECT flow_name, resource FROM {quote_ident(schema)}.setup_metadata "
        "WHERE resource = ANY($1::text[]) AND flow_name <> $2",
        [f"target:{k}" for k in keys],
        except_flow,
    )
    return {r["resource"].removeprefix("target:"): r["flow_name"] for r in rows}


async def allocate_flow_id(conn: Connection, schema: str) -> int:
    sequence = f"{quote_ident(schema)}.flow_id_seq"
    return int(await conn.fetchval("SELECT nextval($1::regclass)", sequence))


async def write_flow_record(
    conn: Connection, schema: str, flow_name: str, record: FlowRecord
) -> None:
    s = quote_ident(schema)
    await conn.execute(f"DELETE FROM {s}.setup_metadata WHERE flow_name = $1", flow_name)
    rows = [(flow_name, "flow", record.flow_state())] + [
        (flow_name, f"target:{key}", state) for key, state in record.targets.items()
    ]
    await conn.executemany(
        f"INSERT INTO {s}.setup_metadata (flow_name, resource, state) VALUES ($1, $2, $3)", rows
    )


async def delete_flow_state(conn: Connection, schema: str, flow_name: str, flow_id: int) -> None:
    s = quote_ident(schema)
    await conn.execute(f"DELETE FROM {s}.tracking WHERE flow_id = $1", flow_id)
    await conn.execute(f"DELETE FROM {s}.memo WHERE flow_id = $1", flow_id)
    await conn.execute(f"DELETE FROM {s}.setup_metadata WHERE flow_name = $1", flow_name)


async def delete_source_tracking(
    conn: Connection, schema: str, flow_id: int, source_id: int
) -> list[dict[str, dict[str, Any]]]:
    """Remove a retired source's tracking rows; returns their target keys to delete.

    The memo entries only those rows used become collection candidates in the same
    transaction, as a commit's released keys do.
    """
    rows = await conn.fetch(
        f"DELETE FROM {quote_ident(schema)}.tracking WHERE flow_id = $1 AND source_id = $2 "
        "RETURNING target_keys, memo_keys",
        flow_id,
        source_id,
    )
    released = {k for r in rows for k in r["memo_keys"]}
    if released:
        s = quote_ident(schema)
        await mark_orphans(conn, f"{s}.memo", f"{s}.tracking", flow_id, released)
    return [dict(r["target_keys"]) for r in rows]


async def tracked_target_keys(
    conn: Connection, schema: str, flow_id: int, export_name: str
) -> list[dict[str, Any]]:
    """Every row's recorded keys for one export (what drop deletes from adopted tables)."""
    rows = await conn.fetch(
        f"SELECT target_keys -> $2 AS entry FROM {quote_ident(schema)}.tracking "
        "WHERE flow_id = $1 AND target_keys ? $2",
        flow_id,
        export_name,
    )
    return [dict(r["entry"]) for r in rows if r["entry"]]


def _unreferenced(memo: str, tracking: str) -> str:
    # The GIN index on tracking.memo_keys answers this per entry.
    return (
        f"NOT EXISTS (SELECT 1 FROM {tracking} t WHERE t.flow_id = $1 "
        f"AND t.memo_keys @> ARRAY[{memo}.fp])"
    )


async def mark_orphans(
    conn: Connection, memo: str, tracking: str, flow_id: int, fps: Iterable[bytes]
) -> None:
    """Mark released entries that no tracking row references any more (same transaction)."""
    await conn.execute(
        f"UPDATE {memo} SET orphaned_at = now() WHERE flow_id = $1 AND fp = ANY($2::bytea[]) "
        f"AND orphaned_at IS NULL AND {_unreferenced(memo, tracking)}",
        flow_id,
        sorted(fps),
    )


_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,  # the connection is gone
    asyncpg.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.InsufficientResourcesError,  # too many connections
    asyncpg.InterfaceError,  # connection or pool closed
    ConnectionError,
)


def _driver_error(error: BaseException) -> BaseException:
    """The driver's error under a cocod DatabaseError (the pool maps and chains them)."""
    if isinstance(error, DatabaseError) and error.__cause__ is not None:
        return error.__cause__
    return error


def is_unavailable_error(error: BaseException) -> bool:
    """The database cannot be reached now: retrying row by row would only wait longer."""
    return isinstance(error, DatabaseUnavailableError) or isinstance(
        _driver_error(error), _UNAVAILABLE
    )


def is_transient_error(error: BaseException) -> bool:
    """Whether retrying the same write may succeed: lost connection, conflict, restart."""
    if is_unavailable_error(error):
        return True
    return isinstance(
        _driver_error(error),
        asyncpg.TransactionRollbackError  # serialization failure, deadlock
        | asyncpg.QueryCanceledError  # statement or lock timeout
        | TimeoutError,
    )


class PostgresStateStore:
    """The engine's StateStore for one flow, plus the target writers its commits use."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        flow_id: int,
        writers: Mapping[str, TargetWriter],
    ) -> None:
        self._pool = pool
        self._flow_id = flow_id
        self._writers = writers
        s = quote_ident(schema)
        self._tracking = f"{s}.tracking"
        self._memo = f"{s}.memo"
        self._lookups = Batcher(self._lookup_batch, max_batch_size=8192)
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
            for export_name, write in merged.items():
                await self._writers[export_name].write(conn, write)
            if memo:
                await conn.executemany(
                    f"INSERT INTO {self._memo} (flow_id, fp, value) VALUES ($1, $2, $3) "
                    "ON CONFLICT (flow_id, fp) DO UPDATE "
                    "SET value = EXCLUDED.value, orphaned_at = NULL",
                    [(self._flow_id, k, v) for k, v in memo.items()],
                )
            if used:
                # Entries found by lookup are in use again: restart their retention clock.
                await conn.execute(
                    f"UPDATE {self._memo} SET orphaned_at = NULL WHERE flow_id = $1 "
                    "AND fp = ANY($2::bytea[]) AND orphaned_at IS NOT NULL",
                    self._flow_id,
                    sorted(used),
                )
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
                await mark_orphans(conn, self._memo, self._tracking, self._flow_id, released)

    async def memo_lookup(self, fps: Sequence[bytes]) -> dict[bytes, bytes]:
        """Concurrent lookups from many rows share one query."""
        values = await self._lookups.submit(list(fps))
        return {fp: v for fp, v in zip(fps, values, strict=True) if v is not None}

    async def _lookup_batch(self, fps: list[bytes]) -> list[bytes | None]:
        found = await self._memo_query(list(set(fps)))
        return [found.get(fp) for fp in fps]

    async def _memo_query(self, fps: Sequence[bytes]) -> dict[bytes, bytes]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT fp, value FROM {self._memo} WHERE flow_id = $1 AND fp = ANY($2::bytea[])",
                self._flow_id,
                list(fps),
            )
        return {r[0]: r[1] for r in rows}

    async def collect_memo_garbage(self, retention_seconds: float) -> int:
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
            removed = await self._collect(float(retention_seconds))
        return removed

    async def _collect(self, retention_seconds: float) -> int:
        old_mark = (
            "flow_id = $1 AND orphaned_at IS NOT NULL "
            "AND orphaned_at <= now() - make_interval(secs => $2)"
        )
        unreferenced = _unreferenced(self._memo, self._tracking)
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                f"DELETE FROM {self._memo} WHERE {old_mark} AND {unreferenced}",
                self._flow_id,
                retention_seconds,
            )
            await conn.execute(
                f"UPDATE {self._memo} SET orphaned_at = NULL WHERE {old_mark} "
                f"AND NOT {unreferenced}",
                self._flow_id,
                retention_seconds,
            )
        return int(status.split()[-1])
