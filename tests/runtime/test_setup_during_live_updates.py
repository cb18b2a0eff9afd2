"""Drop and setup while a live updater runs: the updater follows the new setup and never
writes tracking rows under a dropped flow's id."""

from __future__ import annotations

import time
from pathlib import Path

import cocod as cocoindex
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow


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
        deadline = time.monotonic() + 20
        while sql.fetchval("SELECT count(*) FROM redo__paragraphs WHERE filename='b.md'") != 1:
            assert time.monotonic() < deadline, "the updater did not follow the new setup"
            time.sleep(0.05)
    flow_ids = {r[0] for r in sql.fetch("SELECT DISTINCT flow_id FROM cocod.tracking")}
    current = sql.fetchval(
        "SELECT (state->>'flow_id')::int FROM cocod.setup_metadata WHERE resource = 'flow'"
    )
    assert flow_ids == {current}, "no tracking rows may be written under a dropped flow's id"
