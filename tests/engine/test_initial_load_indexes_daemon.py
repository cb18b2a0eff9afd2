"""A live instance starting after an interrupted initial load leaves the vector index build
to its catch-up pass: the rest of the load goes in without the index (the point of
deferring it), and the build happens once, at the pass's end, not in ``STARTING``.

The load is interrupted in this process (as tests/engine/test_initial_load_indexes.py
does); the real daemon then starts an instance of the same flow over the same files, one
of which holds its catch-up pass open until the test creates the gate file. It lives
beside the engine's tests, not under tests/daemon: the interrupted load runs the library
in this process, which that folder's blockbuster fixture is not meant for.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SqlHelper, write
from tests.daemon.harness import DaemonProcess, eventually, instance
from tests.engine.test_initial_load_indexes import (
    GATE_FILE_ENV,
    _interrupted,
    loaded_flow,
    markers,
    vector_index_oid,
)

NAME = "LiveStart"


def loaded_factory(params: dict):  # type: ignore[no-untyped-def, type-arg]
    """The daemon's definition of the flow ``_interrupted`` loads (table ``loaded``)."""
    return loaded_flow(str(params["source_path"]))


def test_a_live_start_leaves_the_deferred_build_to_its_catch_up_pass(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    flow = _interrupted(tmp_path, NAME, cocod_db)
    flow.close()
    assert vector_index_oid(sql) is None and markers(sql) != []
    write(tmp_path / "docs" / "gate-late.md", "gate: holds the catch-up pass open")
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    config = instance(
        NAME,
        tmp_path / "docs",
        "loaded",
        definition="tests.engine.test_initial_load_indexes_daemon:loaded_factory",
    )
    daemon = DaemonProcess(workdir, cocod_db, config)
    gate = tmp_path / "gate-open"
    daemon.env[GATE_FILE_ENV] = str(gate)
    daemon.start()
    try:
        eventually(lambda: daemon.state(NAME) == "CATCHING_UP", "the catch-up pass", 60)
        # Set up, and loading the rest: still without the index, its marker kept.
        assert vector_index_oid(sql) is None and markers(sql) != []
        gate.touch()
        eventually(lambda: daemon.state(NAME) == "WATCHING", "the end of the catch-up", 60)
        assert vector_index_oid(sql) is not None and markers(sql) == []
    finally:
        gate.touch()
        assert daemon.stop() == 0


def test_an_on_demand_open_leaves_the_deferred_build_to_the_next_pass(
    tmp_path: Path, sql: SqlHelper, cocod_db: str
) -> None:
    """The first command on an on-demand instance opens it (and sets it up): it must not
    pay for a whole table's index build; the instance's next update pass makes it."""
    name = "OnDemandOpen"
    flow = _interrupted(tmp_path, name, cocod_db)
    flow.close()
    (tmp_path / "gate-open").touch()
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    config = instance(
        name,
        tmp_path / "docs",
        "loaded",
        live=False,
        definition="tests.engine.test_initial_load_indexes_daemon:loaded_factory",
    )
    daemon = DaemonProcess(workdir, cocod_db, config)
    daemon.env[GATE_FILE_ENV] = str(tmp_path / "gate-open")
    daemon.start()
    try:
        reply = daemon.request("query", name=name, text="document 3", top=1, timeout=60)
        assert reply["ok"], reply
        assert vector_index_oid(sql) is None and markers(sql) != []
        reply = daemon.request("update", name=name, timeout=60)
        assert reply["ok"], reply
        assert vector_index_oid(sql) is not None and markers(sql) == []
    finally:
        assert daemon.stop() == 0
