"""Deferred vector indexes when their build cannot simply run: a repair that re-creates
the table, a parallel build short of shared memory, a table locked by someone else, and a
build that keeps failing under one lease.

Each starts from an interrupted initial load (``_interrupted``: the marker is written, the
index dropped, part of the rows in) and looks from outside: the index, the marker rows,
the rows of the table; the per-lease knowledge of the markers where nothing outside shows
it (a removed target's marker kept in memory costs every later pass a connection).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.lowlevel
import asyncpg
import pytest

import cocod as cocoindex
from cocod.runtime.bridge import bridge
from cocod.runtime.context import get_context
from cocod.runtime.verify import verify
from cocod.storage import deferred_indexes
from cocod.storage.deferred_indexes import INITIAL_LOAD_MIN_ROWS
from tests.conftest import SqlHelper
from tests.engine.test_initial_load_indexes import (
    TABLE,
    _interrupted,
    loaded_flow,
    lock_held,
    make_docs,
    markers,
    rows,
    vector_index_oid,
)

MARKER = f"deferred_indexes:Postgres:.{TABLE}"


def test_repair_of_a_table_whose_keys_changed_rebuilds_it_with_its_index(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    """The repair drops and re-creates the table: the deferred build must not run against
    the dropped one (it did, and the whole repair rolled back every time)."""
    flow = _interrupted(tmp_path, "RepairKeyMarker", cocod_db)
    assert markers(sql) == [MARKER] and vector_index_oid(sql) is None
    sql.execute(f"ALTER TABLE {TABLE} RENAME COLUMN filename TO fname")

    report = verify(flow, repair=True)

    assert report.repair is not None and TABLE in " ".join(report.repair.tables_created)
    assert report.after is not None and report.after.is_clean
    assert vector_index_oid(sql) is not None and markers(sql) == []
    assert rows(sql) == INITIAL_LOAD_MIN_ROWS + 21


def test_a_repair_that_fails_says_it_rolled_back(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    """The pool maps the driver's error before the repair sees it: the repair's own message
    (what failed, that nothing changed) must still be the one raised."""
    flow = _interrupted(tmp_path, "RepairFails", cocod_db)
    sql.execute(f"ALTER TABLE {TABLE} RENAME COLUMN filename TO fname")
    # A view on the table makes the re-create of the table fail (DROP TABLE, no CASCADE).
    sql.execute(f"CREATE VIEW pinned AS SELECT fname FROM {TABLE}")
    with pytest.raises(cocoindex.errors.DatabaseError, match=r"could not restore its tables"):
        verify(flow, repair=True)
    assert markers(sql) == [MARKER]  # rolled back with the rest


SHM_TRIGGER = [
    "CREATE SEQUENCE refused_builds",  # nextval survives the rollback of the build
    """CREATE FUNCTION no_parallel_builds() RETURNS event_trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF current_setting('max_parallel_maintenance_workers') <> '0' THEN
            PERFORM nextval('refused_builds');
            RAISE EXCEPTION USING ERRCODE = 'disk_full', MESSAGE = 'could not resize shared '
                'memory segment "/PostgreSQL.1" to 141557760 bytes: No space left on device';
        END IF;
    END $$""",
    "CREATE EVENT TRIGGER no_parallel_builds ON ddl_command_start "
    "WHEN TAG IN ('CREATE INDEX') EXECUTE FUNCTION no_parallel_builds()",
]
"""A server where a parallel index build fails as it does in a container whose
``/dev/shm`` is too small: the same SQLSTATE and message, raised by the server for any
CREATE INDEX that may use parallel workers (and counted)."""


@pytest.mark.parametrize("builder", ["update", "setup"])
def test_a_build_short_of_shared_memory_is_retried_without_parallel_workers(
    tmp_path: Path, sql: SqlHelper, cocod_db: str, builder: str
) -> None:
    flow = _interrupted(tmp_path, f"ShmBuild{builder}", cocod_db)
    assert sql.fetchval("SHOW max_parallel_maintenance_workers") != "0"
    for statement in SHM_TRIGGER:
        sql.execute(statement)
    assert markers(sql) == [MARKER] and vector_index_oid(sql) is None

    flow.update() if builder == "update" else flow.setup()

    assert vector_index_oid(sql) is not None and markers(sql) == []
    assert sql.fetchval("SELECT last_value FROM refused_builds") == 1  # then serially


def test_setup_whose_build_cannot_get_its_lock_warns_and_keeps_the_marker(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    """Nothing is inconsistent (the rows are in, queries scan): setup returns, and the
    marker stays for the next pass or setup."""
    flow = _interrupted(tmp_path, "SetupBlocked", cocod_db)
    with lock_held(cocod_db, f"LOCK TABLE {TABLE} IN ROW EXCLUSIVE MODE"):
        flow.setup()
        assert vector_index_oid(sql) is None and markers(sql) == [MARKER]
    flow.setup()
    assert vector_index_oid(sql) is not None and markers(sql) == []


def test_a_setup_before_a_pass_leaves_the_build_to_the_pass(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    """What the daemon's instance start, an on-demand open and ``cocod update`` run: the
    rest of the load then goes in without the index, built once at the pass's end."""
    flow = _interrupted(tmp_path, "SetupBeforePass", cocod_db)
    execution = flow.execution()
    plan = bridge.run(execution.setup(get_context(), build_deferred=False))
    assert plan.deferred_index_builds
    assert vector_index_oid(sql) is None and markers(sql) == [MARKER]
    flow.update()
    assert vector_index_oid(sql) is not None and markers(sql) == []
    assert rows(sql) == INITIAL_LOAD_MIN_ROWS + 21


def test_a_setup_with_changes_before_a_pass_keeps_the_marker(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    """Setup's record write replaces every row of the flow: a marker it does not build
    must be written again, or the index would never be built."""
    flow = _interrupted(tmp_path, "ChangesBeforePass", cocod_db)
    flow.close()
    docs = str(tmp_path / "docs")
    changed = cocoindex.open_flow("ChangesBeforePass", _with_second_table(docs))
    plan = bridge.run(changed.execution().setup(get_context(), build_deferred=False))
    assert plan.has_changes
    assert vector_index_oid(sql) is None and markers(sql) == [MARKER]
    changed.update()
    assert vector_index_oid(sql) is not None and markers(sql) == []


def _with_second_table(source: str):  # type: ignore[no-untyped-def]
    """The loaded flow plus a second export (a setup change that keeps ``loaded``)."""
    base = loaded_flow(source)

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        base(fb, scope)
        extra = scope.add_collector()
        with scope["docs"].row() as doc:
            extra.collect(filename=doc["filename"])
        extra.export(
            "names", cocoindex.targets.Postgres(table_name="names"), primary_key_fields=["filename"]
        )

    return define


def test_a_failing_build_waits_its_backoff_under_one_lease(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    """A live updater's passes share one lease: after a failed build the next passes do
    not try again (each would wait the lock timeout, the flow's passes queued behind it)
    until the backoff has passed; a new lease (or setup) tries at once."""
    flow = _interrupted(tmp_path, "Backoff", cocod_db)

    async def main() -> None:
        execution = await flow.execution_async()
        ctx = get_context()
        blocker = await asyncpg.connect(cocod_db)
        try:
            async with execution.writing(ctx):
                async with blocker.transaction():
                    await blocker.execute(f"LOCK TABLE {TABLE} IN ROW EXCLUSIVE MODE")
                    await execution.update(ctx)  # the rest of the load; its build times out
                await execution.update(ctx)  # the table is free, but within the backoff
                assert await blocker.fetchval(
                    "SELECT count(*) FROM cocod.setup_metadata WHERE resource = $1", MARKER
                )
        finally:
            await blocker.close()

    bridge.run(main())
    assert rows(sql) == INITIAL_LOAD_MIN_ROWS + 21
    assert vector_index_oid(sql) is None and markers(sql) == [MARKER]
    flow.update()  # its own lease: no backoff to wait
    assert vector_index_oid(sql) is not None and markers(sql) == []


def test_setup_removing_a_marked_target_forgets_its_marker(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    """Under a lease that knows of a marker, a setup that removes its target removes the
    marker with the record: what the lease knows must follow, or every later small pass
    would take the deferral's lock and a connection for a marker that is gone."""
    flow = _interrupted(tmp_path, "Removed", cocod_db)
    docs = str(tmp_path / "docs")

    async def main() -> None:
        execution = await flow.execution_async()
        ctx = get_context()
        blocker = await asyncpg.connect(cocod_db)
        try:
            async with execution.writing(ctx) as lease:
                async with blocker.transaction():
                    await blocker.execute(f"LOCK TABLE {TABLE} IN ROW EXCLUSIVE MODE")
                    await execution.update(ctx)  # learns of the marker; its build fails
                state = deferred_indexes.state_for(lease)
                assert state.pending is not None and list(state.pending) == ["Postgres:.loaded"]
                flow.close()
                moved = cocoindex.open_flow("Removed", loaded_flow(docs, table="moved"))
                await (await moved.execution_async()).setup(ctx)
                assert state.pending == {}
        finally:
            await blocker.close()

    bridge.run(main())
    assert markers(sql) == []


def test_a_drop_that_fails_before_its_commit_writes_through_the_index(
    tmp_path: Path, sql: SqlHelper
) -> None:
    """The deferral is an optimisation: a DROP the server refuses (rolled back, certainly)
    must not fail the load; it keeps the index and writes through it."""
    sql.execute(
        "CREATE FUNCTION no_drops() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', "
        "MESSAGE = 'index drops are not allowed here'; END $$"
    )
    sql.execute(
        "CREATE EVENT TRIGGER no_drops ON ddl_command_start WHEN TAG IN ('DROP INDEX') "
        "EXECUTE FUNCTION no_drops()"
    )
    docs = make_docs(tmp_path / "docs", INITIAL_LOAD_MIN_ROWS + 20, gated=False)
    flow = cocoindex.open_flow("DropRefused", loaded_flow(str(docs)))
    flow.setup()
    created = vector_index_oid(sql)

    flow.update()

    assert rows(sql) == INITIAL_LOAD_MIN_ROWS + 20
    assert vector_index_oid(sql) == created and markers(sql) == []


def test_markers_read_before_an_owner_took_the_lease_are_not_noted_under_it(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    """What a lease knows of the markers must have been read under it: a record read
    before an owner registered its lease may miss a marker another process wrote in
    between, and noting it would make that owner's passes skip the build."""
    flow = _interrupted(tmp_path, "OwnerRace", cocod_db)

    async def main() -> None:
        execution = await flow.execution_async()
        ctx = get_context()
        async with execution.writing(ctx) as taken:
            coordination = execution.coordination
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(execution.open_store, ctx)  # no owner yet
                    # It runs up to its first query, and waits there.
                    await anyio.lowlevel.checkpoint()
                    coordination.held_lease = taken  # an owner registers meanwhile
                assert deferred_indexes.state_for(taken).pending is None
            finally:
                coordination.held_lease = None

    bridge.run(main())
