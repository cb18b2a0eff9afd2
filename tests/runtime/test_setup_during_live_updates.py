"""Drop and setup while a live updater runs: the updater follows the new setup and never
writes tracking rows under a dropped flow's id."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cocod as cocoindex
from tests.conftest import SqlHelper, write
from tests.daemon.harness import ROOT
from tests.flows import paragraph_flow


def wait_for_row(sql: SqlHelper, filename: str, failure: str) -> None:
    deadline = time.monotonic() + 20
    while sql.fetchval("SELECT count(*) FROM redo__paragraphs WHERE filename = $1", filename) != 1:
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


def test_drop_and_setup_while_a_live_updater_runs(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "a")
    flow = cocoindex.open_flow("Redo", paragraph_flow(str(docs)))
    flow.setup()
    with cocoindex.FlowLiveUpdater(flow):
        time.sleep(0.3)
        flow.drop()
        flow.setup()
        write(docs / "b.md", "b after re-setup")
        wait_for_row(sql, "b.md", "the updater did not follow the new setup")
    flow_ids = {r[0] for r in sql.fetch("SELECT DISTINCT flow_id FROM cocod.tracking")}
    current = sql.fetchval(
        "SELECT (state->>'flow_id')::int FROM cocod.setup_metadata WHERE resource = 'flow'"
    )
    assert flow_ids == {current}, "no tracking rows may be written under a dropped flow's id"


APP = """
import os
import cocod as cocoindex
from tests.flows import paragraph_flow

flow = cocoindex.open_flow("Redo", paragraph_flow(os.environ["DOCS"]))
"""


def test_no_other_process_sets_the_flow_up_between_a_live_updaters_drop_and_setup(
    tmp_path: Path, sql: SqlHelper
) -> None:
    """The updater keeps the flow's lease across the drop, so the dropped flow's id stays
    reserved: another process's setup meanwhile waits for that lease (here: refused, as
    ``--no-wait``), instead of setting the flow up under a new id beside the updater."""
    docs = tmp_path / "docs"
    write(docs / "a.md", "a")
    (tmp_path / "app.py").write_text(APP)
    env = {
        **os.environ,
        "COCOD_DATABASE_URL": sql.url,
        "COCOINDEX_DATABASE_URL": sql.url,
        "PYTHONPATH": str(ROOT),
        "DOCS": str(docs),
    }
    flow = cocoindex.open_flow("Redo", paragraph_flow(str(docs)))
    flow.setup()
    first_id = sql.fetchval(
        "SELECT (state->>'flow_id')::int FROM cocod.setup_metadata WHERE resource = 'flow'"
    )
    with cocoindex.FlowLiveUpdater(flow):
        # Its catch-up pass ran, so it holds the lease.
        wait_for_row(sql, "a.md", "the updater's catch-up pass never ran")
        flow.drop()
        other = subprocess.run(
            [sys.executable, "-m", "cocod.cli.main", "setup", "app.py", "-f", "--no-wait"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert other.returncode != 0, f"set up beside the updater:\n{other.stdout}"
        assert str(os.getpid()) in other.stderr, other.stderr  # names the holder
        assert "Traceback" not in other.stderr
        flow.setup()
        write(docs / "b.md", "b after re-setup")
        wait_for_row(sql, "b.md", "the updater did not follow the new setup")
    records = sql.fetch(
        "SELECT resource, (state->>'flow_id')::int AS id FROM cocod.setup_metadata "
        "WHERE resource IN ('flow', 'flow_id')"
    )
    assert [(r["resource"], r["id"]) for r in records] == [("flow", first_id)]
    flow_ids = {r[0] for r in sql.fetch("SELECT DISTINCT flow_id FROM cocod.tracking")}
    assert flow_ids == {first_id}
