"""An initial load defers the target's vector indexes and builds them once at its end.

Observed from outside, as a user would: the index is absent while a big load into an
empty table runs and present after; a small pass or a non-empty table keeps it (same
index oid); an interrupted load (cancelled, or its process killed) leaves a marker that
the next pass, setup and ``verify --repair`` turn into the index; user-managed and
adopted tables keep theirs. One row's file holds the load open (``gate``) so the test can
look at it mid-way; every other row commits as usual.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import anyio
import asyncpg
import numpy as np
import pytest

import cocod as cocoindex
from cocod.runtime.bridge import bridge
from cocod.runtime.context import get_context
from cocod.runtime.verify import verify
from cocod.storage.deferred_indexes import INITIAL_LOAD_MIN_ROWS
from tests.conftest import SqlHelper, write
from tests.flows import tiny_vector

REPO = Path(__file__).resolve().parents[2]
TABLE = "loaded"
GATE = threading.Event()
GATE_FILE_ENV = "COCOD_TEST_GATE_FILE"
"""In a subprocess: the gated row waits until this file exists (never, when killed)."""


@cocoindex.op.function()
def gated_vector(text: str) -> cocoindex.Vector[np.float32, Literal[8]]:
    """The tiny embedder, except that a text starting "gate" waits for the test and one
    starting "boom" fails its row."""
    if text.startswith("gate"):
        gate_file = os.environ.get(GATE_FILE_ENV)
        deadline = time.monotonic() + 60
        while not (Path(gate_file).exists() if gate_file else GATE.is_set()):
            if time.monotonic() > deadline:
                raise RuntimeError("the test never opened the gate")
            time.sleep(0.01)
    if text.startswith("boom"):
        raise ValueError("this row fails")
    return tiny_vector(text)


def loaded_flow(
    source: str,
    *,
    table: str = TABLE,
    setup_by_user: bool = False,
    adopt_existing: bool | None = None,
):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["docs"] = fb.add_source(cocoindex.sources.LocalFile(path=source))
        out = scope.add_collector()
        with scope["docs"].row() as doc:
            doc["embedding"] = doc["content"].transform(gated_vector)
            out.collect(filename=doc["filename"], text=doc["content"], embedding=doc["embedding"])
        out.export(
            "docs",
            cocoindex.targets.Postgres(table_name=table, adopt_existing=adopt_existing),
            primary_key_fields=["filename"],
            vector_indexes=[
                cocoindex.VectorIndexDef(
                    "embedding", cocoindex.VectorSimilarityMetric.COSINE_SIMILARITY
                )
            ],
            setup_by_user=setup_by_user,
        )

    return define


@pytest.fixture(autouse=True)
def gate() -> Iterator[threading.Event]:
    GATE.clear()
    yield GATE
    GATE.set()  # never leave a worker thread waiting


def make_docs(folder: Path, count: int, *, gated: bool = True, first: int = 0) -> Path:
    for i in range(first, first + count):
        write(folder / f"d{i:05}.md", f"document {i}")
    if gated:
        write(folder / "gate.md", "gate: holds the load open")
    return folder


def vector_index_oid(sql: SqlHelper, table: str = TABLE) -> int | None:
    return sql.fetchval(  # type: ignore[return-value]
        "SELECT i.indexrelid::int FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = to_regclass($1) "
        "AND am.amname = 'hnsw'",
        table,
    )


def markers(sql: SqlHelper) -> list[str]:
    return [
        r[0]
        for r in sql.fetch(
            "SELECT resource FROM cocod.setup_metadata WHERE resource LIKE 'deferred_indexes:%'"
        )
    ]


def wait_until(condition, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def rows(sql: SqlHelper, table: str = TABLE) -> int:
    return int(sql.fetchval(f"SELECT count(*) FROM {table}"))  # type: ignore[arg-type]


def test_an_initial_load_builds_the_index_after_its_rows(tmp_path: Path, sql: SqlHelper) -> None:
    docs = make_docs(tmp_path / "docs", INITIAL_LOAD_MIN_ROWS + 20)
    flow = cocoindex.open_flow("Load", loaded_flow(str(docs)))
    flow.setup()
    created = vector_index_oid(sql)
    assert created is not None and markers(sql) == []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            flow.update()
        except BaseException as e:  # reported below
            errors.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_until(
            lambda: sql.fetchval(f"SELECT count(*) FROM {TABLE} WHERE filename = 'd00003.md'"),
            "the first rows of the load",
        )
        assert vector_index_oid(sql) is None  # dropped before the rows went in
        assert markers(sql) == [f"deferred_indexes:Postgres:.{TABLE}"]
        # Queries meanwhile are answered by a scan: still exact.
        hits = flow.query("document 3", top_k=1)
        assert [h["filename"] for h in hits.results] == ["d00003.md"]
    finally:
        GATE.set()
        worker.join(120)
    assert not errors, errors
    assert rows(sql) == INITIAL_LOAD_MIN_ROWS + 21
    built = vector_index_oid(sql)
    assert built is not None and built != created
    assert markers(sql) == []
    # The next pass finds a full table: it writes through the index, never drops it.
    make_docs(docs, INITIAL_LOAD_MIN_ROWS, gated=False, first=10_000)
    flow.update()
    assert vector_index_oid(sql) == built
    assert rows(sql) == 2 * INITIAL_LOAD_MIN_ROWS + 21


def test_a_small_first_pass_keeps_the_index(tmp_path: Path, sql: SqlHelper) -> None:
    GATE.set()
    docs = make_docs(tmp_path / "docs", INITIAL_LOAD_MIN_ROWS - 2)  # with gate.md: one short
    flow = cocoindex.open_flow("Small", loaded_flow(str(docs)))
    flow.setup()
    created = vector_index_oid(sql)
    flow.update()
    assert rows(sql) == INITIAL_LOAD_MIN_ROWS - 1
    assert vector_index_oid(sql) == created
    assert markers(sql) == []


def test_a_failing_row_does_not_stop_the_build(tmp_path: Path, sql: SqlHelper) -> None:
    GATE.set()
    docs = make_docs(tmp_path / "docs", INITIAL_LOAD_MIN_ROWS)
    write(docs / "boom.md", "boom: this row fails")
    flow = cocoindex.open_flow("Boom", loaded_flow(str(docs)))
    flow.setup()
    created = vector_index_oid(sql)
    info = flow.update()
    assert info.sources["docs"].num_errors == 1
    built = vector_index_oid(sql)
    assert built is not None and built != created
    assert markers(sql) == []


def _cancel_mid_load(flow: cocoindex.Flow, database_url: str) -> None:
    """Start a pass, cancel it once its load has dropped the index, then open the gate
    (the gated row's thread finishes; the pass unwinds as cancelled)."""

    async def main() -> None:
        execution = await flow.execution_async()
        conn = await asyncpg.connect(database_url)
        try:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(execution.update, get_context())
                    with anyio.fail_after(60):
                        while True:  # polls the database: there is no event to wait on
                            if await conn.fetchval(
                                "SELECT count(*) FROM cocod.setup_metadata WHERE resource "
                                f"LIKE 'deferred_indexes:%' AND EXISTS (SELECT 1 FROM {TABLE})"
                            ):
                                break
                            await anyio.sleep(0.05)
                    scope.cancel()
                    GATE.set()
        finally:
            await conn.close()

    bridge.run(main())


def _interrupted(tmp_path: Path, name: str, database_url: str) -> cocoindex.Flow:
    docs = make_docs(tmp_path / "docs", INITIAL_LOAD_MIN_ROWS + 20)
    flow = cocoindex.open_flow(name, loaded_flow(str(docs)))
    flow.setup()
    _cancel_mid_load(flow, database_url)
    return flow


def test_a_cancelled_load_leaves_its_marker_and_the_next_pass_builds(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    flow = _interrupted(tmp_path, "Cancelled", cocod_db)
    assert vector_index_oid(sql) is None
    assert markers(sql) == [f"deferred_indexes:Postgres:.{TABLE}"]
    # Not drift: setup has nothing to change, and verify calls it pending work.
    plan = bridge.run(flow.execution().plan_setup(get_context()))
    assert not plan.has_changes and plan.deferred_index_builds
    assert "deferred by an initial load" in plan.render("cocod")
    report = verify(flow)
    assert not report.has_drift and report.count("deferred_index") == 1
    flow.update()
    assert vector_index_oid(sql) is not None and markers(sql) == []
    assert rows(sql) == INITIAL_LOAD_MIN_ROWS + 21
    assert verify(flow).is_clean


def test_setup_builds_what_an_interrupted_load_left(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    flow = _interrupted(tmp_path, "SetupRepairs", cocod_db)
    assert vector_index_oid(sql) is None
    flow.setup()
    built = vector_index_oid(sql)
    assert built is not None and markers(sql) == []
    flow.setup()  # nothing left: the marker went with the build
    flow.update()  # the rest of the load goes through the index
    assert vector_index_oid(sql) == built
    assert rows(sql) == INITIAL_LOAD_MIN_ROWS + 21


def test_verify_repair_builds_what_an_interrupted_load_left(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    flow = _interrupted(tmp_path, "VerifyRepairs", cocod_db)
    report = verify(flow, repair=True)
    assert report.repair is not None and report.repair.indexes_created
    assert report.after is not None and report.after.count("deferred_index") == 0
    assert vector_index_oid(sql) is not None and markers(sql) == []


@contextmanager
def lock_held(database_url: str, statement: str) -> Iterator[None]:
    """A second session holding a table lock (in its own thread and event loop) until the
    block ends."""
    held, release = threading.Event(), threading.Event()

    async def hold() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                await conn.execute(statement)
                held.set()
                await asyncio.to_thread(release.wait, 120)
        finally:
            await conn.close()

    thread = threading.Thread(target=asyncio.run, args=(hold(),))
    thread.start()
    try:
        assert held.wait(30), "the lock was never taken"
        yield
    finally:
        release.set()
        thread.join(30)


def test_a_build_that_cannot_get_its_lock_leaves_the_marker_for_the_next_pass(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    docs = make_docs(tmp_path / "docs", INITIAL_LOAD_MIN_ROWS + 20)
    flow = cocoindex.open_flow("Locked", loaded_flow(str(docs)))
    flow.setup()
    worker = threading.Thread(target=flow.update)
    worker.start()
    try:
        wait_until(lambda: markers(sql) != [] and rows(sql) > 0, "the load")
        # ROW EXCLUSIVE lets the load's writes through but not CREATE INDEX's SHARE lock.
        with lock_held(cocod_db, f"LOCK TABLE {TABLE} IN ROW EXCLUSIVE MODE"):
            GATE.set()
            worker.join(120)
            assert not worker.is_alive()
            assert rows(sql) == INITIAL_LOAD_MIN_ROWS + 21  # the rows are all in
            assert vector_index_oid(sql) is None and markers(sql) != []
    finally:
        GATE.set()
        worker.join(120)
    flow.update()  # nothing to write: it only builds
    assert vector_index_oid(sql) is not None and markers(sql) == []


SUBPROCESS_UPDATE = """
import sys
import cocod
from tests.engine.test_initial_load_indexes import loaded_flow
cocod.init(cocod.Settings(database=cocod.DatabaseConnectionSpec(url=sys.argv[1])))
flow = cocod.open_flow("Killed", loaded_flow(sys.argv[2]))
flow.update()
"""


def test_a_killed_load_is_finished_by_the_next_pass(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    docs = make_docs(tmp_path / "docs", INITIAL_LOAD_MIN_ROWS + 20)
    flow = cocoindex.open_flow("Killed", loaded_flow(str(docs)))
    flow.setup()
    env = {**os.environ, GATE_FILE_ENV: str(tmp_path / "never"), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SUBPROCESS_UPDATE, cocod_db, str(docs)],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: proc.poll() is not None or (markers(sql) != [] and rows(sql) > 0),
            "the subprocess's load",
        )
        assert proc.poll() is None, proc.communicate()[1]
        # Setup meanwhile does not wait for the loading process's lease: that process
        # builds the index itself when its load ends.
        setup = threading.Thread(target=flow.setup)
        setup.start()
        setup.join(30)
        assert not setup.is_alive(), "setup waited for the lease of the loading process"
        assert vector_index_oid(sql) is None and markers(sql) != []
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert vector_index_oid(sql) is None and markers(sql) != []
    GATE.set()
    flow.update()  # waits for the dead process's lease to go, then finishes its load
    assert vector_index_oid(sql) is not None and markers(sql) == []
    assert rows(sql) == INITIAL_LOAD_MIN_ROWS + 21


@pytest.mark.parametrize("how", ["setup_by_user", "adopt_existing"])
def test_tables_cocod_does_not_manage_keep_their_indexes(
    tmp_path: Path, sql: SqlHelper, how: str
) -> None:
    GATE.set()
    sql.execute("CREATE EXTENSION IF NOT EXISTS vector")
    sql.execute(f"CREATE TABLE {TABLE} (filename text PRIMARY KEY, text text, embedding vector(8))")
    sql.execute(
        f"CREATE INDEX {TABLE}__embedding__vector_cosine_ops ON {TABLE} "
        "USING hnsw (embedding vector_cosine_ops)"
    )
    created = vector_index_oid(sql)
    docs = make_docs(tmp_path / "docs", INITIAL_LOAD_MIN_ROWS + 20)
    define = (
        loaded_flow(str(docs), setup_by_user=True)
        if how == "setup_by_user"
        else loaded_flow(str(docs), adopt_existing=True)
    )
    flow = cocoindex.open_flow("NotOurs", define)
    flow.setup()
    flow.update()
    assert rows(sql) == INITIAL_LOAD_MIN_ROWS + 21
    assert vector_index_oid(sql) == created
    assert markers(sql) == []


def test_a_live_updater_stopped_mid_load_leaves_the_build_to_the_next_one(
    tmp_path: Path, sql: SqlHelper
) -> None:
    """The daemon's path: the lease is held for the updater's whole run, and stopping it
    (a drain) cancels the pass, which leaves its marker; the next updater's catch-up pass
    learns of it from the setup record it opens its store with, and builds."""
    docs = make_docs(tmp_path / "docs", INITIAL_LOAD_MIN_ROWS + 20)
    flow = cocoindex.open_flow("LiveLoad", loaded_flow(str(docs)))
    flow.setup()
    first = cocoindex.FlowLiveUpdater(flow, cocoindex.FlowLiveUpdaterOptions(live_mode=True))
    first.start()
    try:
        wait_until(lambda: markers(sql) != [] and rows(sql) > 0, "the catch-up load")
    finally:
        first.abort()
        GATE.set()  # the gated row's thread returns; the pass unwinds as cancelled
        first.wait()
    assert vector_index_oid(sql) is None and markers(sql) != []
    second = cocoindex.FlowLiveUpdater(flow, cocoindex.FlowLiveUpdaterOptions(live_mode=True))
    second.start()
    try:
        wait_until(lambda: vector_index_oid(sql) is not None, "the next updater's build")
        wait_until(lambda: markers(sql) == [], "the marker's removal")
        assert rows(sql) == INITIAL_LOAD_MIN_ROWS + 21
    finally:
        second.abort()
        second.wait()
