"""A full pass compares its listing with tracked ordinals read while it walked (the same
answer as the server-side diff), and in a fresh process it needs one pooled connection,
whose session is set up in as few round trips as it can."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import cocod as cocoindex
from cocod.engine.interfaces import RowCommit, TrackedRow
from cocod.engine.listing_diff import ListingStateStore, list_and_diff
from cocod.executors.local_file import LocalFileReader
from cocod.ops.sources import LocalFile
from cocod.runtime.context import get_context
from cocod.storage import internal_schema, state
from cocod.storage.pool import open_pool
from tests.conftest import write
from tests.flows import paragraph_flow

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[state.PostgresStateStore]:
    pool = await open_pool(database_url, max_size=2)
    async with pool.acquire() as conn:
        await internal_schema.ensure_internal_schema(conn, "cocod")
    try:
        yield state.PostgresStateStore(pool, "cocod", 1, {})
    finally:
        await pool.close()


async def _track(store: state.PostgresStateStore, rows: dict[str, tuple[int, int]]) -> None:
    await store.commit_rows(
        [RowCommit(1, key, TrackedRow(o, b"c", b"logic")) for key, o in rows.items()]
    )


async def test_the_read_state_gives_the_server_side_diff(
    store: state.PostgresStateStore,
) -> None:
    tracked = {f"d{i % 3}/f{i}.md": (1_000 + i, i) for i in range(50)}
    tracked["caf\u00e9.md"] = (7, 7)
    tracked["raw\udcff.md"] = (8, 8)  # a name that is not UTF-8 (surrogateescape)
    await _track(store, tracked)
    listed = dict(tracked)
    listed["d0/f0.md"] = (1, 0)  # changed mtime
    listed["d1/f1.md"] = (1_001, 99)  # changed size
    del listed["d2/f2.md"]  # gone
    del listed["raw\udcff.md"]  # gone, not UTF-8
    listed["new/\u00fc.md"] = (5, 5)  # new, not ASCII
    listed["lone\ud800.md"] = (6, 6)  # cannot be stored: always a candidate
    for logic in (b"logic", b"changed"):
        sql_diff = await store.diff_listing(1, listed, logic)
        read = await store.load_listing_state(1, logic)
        assert len(read) == len(tracked)
        diff = read.diff(listed)
        assert sorted(diff.changed) == sorted(sql_diff.changed)
        assert sorted(diff.gone) == sorted(sql_diff.gone) == ["d2/f2.md", "raw\udcff.md"]
    same = (await store.load_listing_state(1, b"logic")).diff(listed)
    assert sorted(same.changed) == ["d0/f0.md", "d1/f1.md", "lone\ud800.md", "new/\u00fc.md"]
    every = (await store.load_listing_state(1, b"changed")).diff(listed)
    assert len(every.changed) == len(listed)  # a new logic fingerprint: every row


async def test_a_pass_lists_and_reads_together_and_a_missing_root_stays_an_error(
    store: state.PostgresStateStore, tmp_path: Path
) -> None:
    assert isinstance(store, ListingStateStore)
    root = tmp_path / "docs"
    for i in range(20):
        write(root / f"f{i}.md", f"text {i}")
    reader = LocalFileReader(LocalFile(path=str(root), included_patterns=["*.md"]))
    listed = reader.list_rows_sync()
    await _track(store, {k: o for k, o in listed.items() if k != "f3.md"})
    write(root / "f5.md", "edited, and longer than it was")
    (root / "f7.md").unlink()
    got, diff = await list_and_diff(reader, store, 1, b"logic")
    assert set(got) == set(listed) - {"f7.md"}
    assert sorted(diff.changed) == ["f3.md", "f5.md"]
    assert diff.gone == ["f7.md"]

    shutil.rmtree(root)
    with pytest.raises(cocoindex.errors.SourceError):
        await list_and_diff(reader, store, 1, b"logic")


async def test_pooled_sessions_are_set_up_in_one_message(database_url: str) -> None:
    pool = await open_pool(database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            settings = await conn.fetchrow(
                "SELECT current_setting('synchronous_commit'), current_setting('jit')"
            )
    finally:
        await pool.close()
    assert tuple(settings) == ("off", "off")


def test_a_fresh_process_opens_one_connection_whatever_min_connections_says(
    tmp_path: Path, database_url: str
) -> None:
    docs = tmp_path / "docs"
    for i in range(5):
        write(docs / f"f{i}.md", f"alpha {i}\n\nbeta {i}")
    cocoindex.init(
        cocoindex.Settings(
            database=cocoindex.DatabaseConnectionSpec(url=database_url, min_connections=5)
        )
    )
    try:
        flow = cocoindex.open_flow("OneConnection", paragraph_flow(str(docs)))
        flow.setup()
        flow.update()
        pool = get_context()._pool
        assert pool is not None
        assert pool.get_size() >= 1
        assert pool.get_min_size() == 1  # the others open on demand, up to max
        assert pool.get_max_size() == 25
        flow.close()
    finally:
        cocoindex.stop()


async def test_pooled_sessions_get_the_vector_codecs_from_one_look_up(database_url: str) -> None:
    pool = await open_pool(database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            back = await conn.fetchrow(
                "SELECT $1::vector, $2::halfvec, '{1:1.5}/3'::sparsevec",
                [1.0, 2.0],
                [0.5, 0.25],
            )
    finally:
        await pool.close()
    assert back[0].to_list() == [1.0, 2.0]
    assert back[1].to_list() == [0.5, 0.25]
    assert back[2].to_list() == [1.5, 0.0, 0.0]
