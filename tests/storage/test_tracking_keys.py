"""Tracking keys: any file name's bytes are stored losslessly, hint lookups cost O(keys),
and the internal tables are created (or migrated) once however many processes start."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

import cocod as cocoindex
from cocod.engine.indexer import _expand_hinted_keys
from cocod.engine.interfaces import RowCommit, TrackedRow
from cocod.errors import RowError
from cocod.storage import internal_schema, state
from cocod.storage.pool import open_pool
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await open_pool(database_url, max_size=4)
    try:
        yield p
    finally:
        await p.close()


def test_a_name_that_is_not_utf8_is_indexed_kept_apart_and_deleted(
    tmp_path: Path, sql: SqlHelper
) -> None:
    docs = tmp_path / "docs"
    write(docs / "café.md", "accented")
    bad = os.path.join(os.fsencode(docs), b"caf\xe9.md")
    with open(bad, "wb") as f:
        f.write(b"latin-1 name")
    flow = cocoindex.open_flow("Names", paragraph_flow(str(docs)))
    flow.setup()
    info = flow.update()
    assert info.stats["documents"]["num_errors"] == 0
    assert info.stats["documents"]["num_insertions"] == 2
    keys = {bytes(r[0]) for r in sql.fetch("SELECT source_key FROM cocod.tracking")}
    assert keys == {"café.md".encode(), b"caf\xe9.md"}
    # In the target the undecodable byte is shown escaped; the UTF-8 name is untouched.
    rows = dict(sql.fetch("SELECT filename, text FROM names__paragraphs"))
    assert rows == {"café.md": "accented", "caf\\xe9.md": "latin-1 name"}
    assert flow.update().stats["documents"]["num_no_change"] == 2
    os.unlink(bad)
    info = flow.update()
    assert info.stats["documents"]["num_deletions"] == 1
    assert dict(sql.fetch("SELECT filename, text FROM names__paragraphs")) == {
        "café.md": "accented"
    }


async def test_a_key_with_no_byte_form_is_that_rows_error(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await internal_schema.ensure_internal_schema(conn, "cocod")
    store = state.PostgresStateStore(pool, "cocod", 1, {})
    tracked = TrackedRow(None, b"c", b"l")
    with pytest.raises(RowError, match="cannot be stored"):
        await store.commit_rows([RowCommit(1, "lone\ud800", tracked)])
    await store.commit_rows([RowCommit(1, "fine", tracked)])
    assert set(await store.load_ordinals(1)) == {"fine"}


async def _track(conn: asyncpg.Connection, keys: list[str]) -> None:
    await conn.copy_records_to_table(
        "tracking",
        schema_name="cocod",
        columns=["flow_id", "source_id", "source_key", "target_keys", "memo_keys", "uuids"],
        records=[(1, 1, k.encode("utf-8", "surrogateescape"), "{}", [], "{}") for k in keys],
    )
    await conn.execute("ANALYZE cocod.tracking")


async def test_hinted_folders_and_files_load_exactly_what_is_at_or_under_them(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await internal_schema.ensure_internal_schema(conn, "cocod")
    keys = ["dir/a.md", "dir/sub/b.md", "dir-x.md", "dir.md", "dir0/c.md", "dir", "café/x"]
    await _track(conn, [*keys, "caf\udce9/y", "other.md"])
    store = state.PostgresStateStore(pool, "cocod", 1, {})
    found = await store.load_ordinals(1, ["dir", "caf\udce9", "missing/x.md", "lone\ud800"])
    assert set(found) == {"dir", "dir/a.md", "dir/sub/b.md", "caf\udce9/y"}
    # A store may return more than asked: only what is at or under a hint is a candidate.
    expanded = _expand_hinted_keys(["dir", "gone.md"], {**found, "elsewhere.md": None})
    assert set(expanded) == {"dir", "gone.md", "dir/a.md", "dir/sub/b.md"}


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [node]
    for child in node.get("Plans", []):
        nodes.extend(_plan_nodes(child))
    return nodes


async def test_a_burst_of_hints_is_index_range_scans_not_a_scan_per_key(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    await internal_schema.ensure_internal_schema(conn, "cocod")
    tracked = [f"d{i % 200}/f{i}.md" for i in range(20_000)]
    await _track(conn, tracked)
    hints = [f"d{i % 200}/f{i}.md" for i in range(0, 20_000, 8)]  # 2,500 files
    hints += [f"d{i}" for i in range(0, 40)]  # 40 folders, 100 files each
    hints += [f"new/f{i}.md" for i in range(2_460)]  # not tracked yet
    assert len(hints) == 5_000
    store = state.PostgresStateStore(pool, "cocod", 1, {})
    args = store.near_keys_args(1, hints)
    raw = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {store.near_keys_sql}", *args)
    (plan,) = json.loads(raw)
    nodes = [n for n in _plan_nodes(plan["Plan"]) if n.get("Relation Name") == "tracking"]
    assert nodes, plan
    assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in nodes), nodes
    examined = sum(
        (n["Actual Rows"] + n.get("Rows Removed by Filter", 0)) * n["Actual Loops"] for n in nodes
    )
    expected = 2_500 + 40 * 100  # the hinted files, and the files of the hinted folders
    assert examined <= expected + 100, f"examined {examined} tracking rows for {expected}"
    loaded = await store.load_ordinals(1, hints)
    folders = {f"d{i}" for i in range(40)}
    assert set(loaded) == set(hints[:2_500]) | {k for k in tracked if k.split("/")[0] in folders}


async def test_instances_starting_together_create_the_tables_once(database_url: str) -> None:
    created: list[bool] = []

    async def start() -> None:
        c = await asyncpg.connect(database_url)
        try:
            created.append(await internal_schema.ensure_internal_schema(c, "cocod"))
        finally:
            await c.close()

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(start)
    assert sorted(created) == [False] * 5 + [True]


def test_a_database_from_before_byte_keys_is_migrated_without_reprocessing(
    tmp_path: Path, database_url: str
) -> None:
    cocoindex.init(cocoindex.Settings(database=cocoindex.DatabaseConnectionSpec(url=database_url)))
    sql = SqlHelper(database_url)
    docs = tmp_path / "docs"
    write(docs / "a.md", "one\n\ntwo")
    write(docs / "b.md", "three")
    flow = cocoindex.open_flow("Old", paragraph_flow(str(docs)))
    flow.setup()
    flow.update()
    flow.close()
    cocoindex.stop()
    # The first layout: text keys, and a memo entry whose release an old process forgot.
    sql.execute(
        "ALTER TABLE cocod.tracking ALTER COLUMN source_key TYPE text "
        "USING convert_from(source_key, 'UTF8')"
    )
    sql.execute(
        "INSERT INTO cocod.memo (flow_id, fp, value) SELECT flow_id, 'lost', 'x' "
        "FROM cocod.memo LIMIT 1"
    )
    cocoindex.init(cocoindex.Settings(database=cocoindex.DatabaseConnectionSpec(url=database_url)))
    flow = cocoindex.open_flow("Old", paragraph_flow(str(docs)))
    try:
        info = flow.update()
        assert info.stats["documents"]["num_no_change"] == 2
        assert (
            sql.fetchval(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'cocod.tracking'::regclass AND attname = 'source_key'"
            )
            == "bytea"
        )
        assert (
            sql.fetchval("SELECT orphaned_at IS NOT NULL FROM cocod.memo WHERE fp = 'lost'::bytea")
            is True
        )
        assert sql.fetchval("SELECT count(*) FROM cocod.memo WHERE orphaned_at IS NULL") == 3
    finally:
        flow.close()
