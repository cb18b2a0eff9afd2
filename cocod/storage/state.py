"""cocod's internal tables: setup records, per-row tracking, and the memo.

All flows share three tables in the internal schema (``cocod`` unless
``db_schema_name`` says otherwise), partitioned by a numeric ``flow_id``: no per-flow DDL,
no identifier-length limits on flow names, and dropping a flow is a few DELETEs.

    setup_metadata (flow_name, resource) → state jsonb      what setup last applied
    tracking (flow_id, source_id, source_key)               one row per processed source row
    memo (flow_id, fp) → value bytea                         memoized function results
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import anyio
import asyncpg

from cocod.engine.evaluator import Batcher
from cocod.engine.interfaces import ExportWrite, Ordinal, RowCommit, TrackedRow
from cocod.engine.setup import FlowRecord
from cocod.flow.naming import quote_ident
from cocod.storage.pool import Connection


class TargetWriter(Protocol):
    """Writes one export's rows inside the row's transaction."""

    async def write(self, conn: Connection, write: ExportWrite) -> None: ...


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
            source_key text NOT NULL,
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
    """Remove a retired source's tracking rows; returns their target keys to delete."""
    rows = await conn.fetch(
        f"DELETE FROM {quote_ident(schema)}.tracking WHERE flow_id = $1 AND source_id = $2 "
        "RETURNING target_keys",
        flow_id,
        source_id,
    )
    return [dict(r["target_keys"]) for r in rows]


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
        self._orphan_candidates: set[bytes] = set()
        self._has_swept = False
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

    async def load_ordinals(
        self, source_id: int, near_keys: Sequence[str] | None = None
    ) -> dict[str, tuple[Ordinal | None, bytes | None]]:
        query = (
            f"SELECT source_key, ordinal_mtime_ns, ordinal_size, logic_fp "
            f"FROM {self._tracking} WHERE flow_id = $1 AND source_id = $2"
        )
        args: list[Any] = [self._flow_id, source_id]
        if near_keys is not None:
            # Only the hinted keys and what is under them (a hint may name a folder).
            query += (
                " AND (source_key = ANY($3::text[]) OR "
                "source_key LIKE ANY(SELECT replace(replace(replace(k, '\\', '\\\\'), "
                "'%', '\\%'), '_', '\\_') || '/%' FROM unnest($3::text[]) AS k))"
            )
            args.append(list(near_keys))
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(query, *args)
        return {r[0]: ((r[1], r[2]) if r[1] is not None else None, r[3]) for r in rows}

    async def load_tracked_rows(self, source_id: int, keys: Sequence[str]) -> dict[str, TrackedRow]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT source_key, ordinal_mtime_ns, ordinal_size, content_fp, logic_fp, "
                f"target_keys, memo_keys, uuids FROM {self._tracking} "
                "WHERE flow_id = $1 AND source_id = $2 AND source_key = ANY($3::text[])",
                self._flow_id,
                source_id,
                list(keys),
            )
        return {
            r["source_key"]: TrackedRow(
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
        deletes: list[tuple[int, int, str]] = []
        upserts: list[tuple[Any, ...]] = []
        memo: dict[bytes, bytes] = {}
        for c in commits:
            memo.update(c.memo_entries)
            if c.tracked is None:
                deletes.append((self._flow_id, c.source_id, c.key))
                continue
            t = c.tracked
            upserts.append(
                (
                    self._flow_id,
                    c.source_id,
                    c.key,
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
            used = [k for c in commits if c.tracked for k in c.tracked.memo_keys if k not in memo]
            if used:
                # Entries found by lookup are in use again: restart their retention clock.
                await conn.execute(
                    f"UPDATE {self._memo} SET orphaned_at = NULL WHERE flow_id = $1 "
                    "AND fp = ANY($2::bytea[]) AND orphaned_at IS NOT NULL",
                    self._flow_id,
                    used,
                )
            if upserts:
                await conn.executemany(self._upsert_tracking_sql, upserts)
            if deletes:
                await conn.executemany(
                    f"DELETE FROM {self._tracking} "
                    "WHERE flow_id = $1 AND source_id = $2 AND source_key = $3",
                    deletes,
                )
        for c in commits:
            if c.released_memo_keys:
                self._orphan_candidates.update(c.released_memo_keys)

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
        """Mark entries no row uses any more; delete those unused for the retention period.

        Only entries some row released since the last collection are examined, so a
        one-file edit does not scan the whole memo. Keeping orphans for a while lets a
        file that is renamed, or edited and restored, reuse its embeddings.
        """
        candidates = list(self._orphan_candidates)
        self._orphan_candidates.clear()
        unreferenced = (
            f"NOT EXISTS (SELECT 1 FROM {self._tracking} t WHERE t.flow_id = $1 "
            f"AND t.memo_keys @> ARRAY[{self._memo}.fp])"
        )
        removed = 0
        with anyio.CancelScope(shield=True):  # never leave a pooled connection mid-transaction
            removed = await self._collect(candidates, unreferenced, retention_seconds)
        return removed

    async def _collect(
        self, candidates: list[bytes], unreferenced: str, retention_seconds: float
    ) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            if not self._has_swept:
                # Candidates are remembered in memory only; once per process, look at every
                # entry so releases lost with an earlier process are still collected.
                self._has_swept = True
                await conn.execute(
                    f"UPDATE {self._memo} SET orphaned_at = now() WHERE flow_id = $1 "
                    f"AND orphaned_at IS NULL AND {unreferenced}",
                    self._flow_id,
                )
            elif candidates:
                await conn.execute(
                    f"UPDATE {self._memo} SET orphaned_at = now() WHERE flow_id = $1 "
                    f"AND fp = ANY($2::bytea[]) AND orphaned_at IS NULL AND {unreferenced}",
                    self._flow_id,
                    candidates,
                )
            status = await conn.execute(
                f"DELETE FROM {self._memo} WHERE flow_id = $1 AND orphaned_at IS NOT NULL "
                f"AND orphaned_at <= now() - make_interval(secs => $2) AND {unreferenced}",
                self._flow_id,
                float(retention_seconds),
            )
        return int(status.split()[-1])
