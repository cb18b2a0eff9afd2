"""LocalFile skips special files: a FIFO in a watched folder is never opened (opening it
would block the source until a writer came)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cocod as cocoindex
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow


def test_fifo_in_a_watched_folder_is_ignored(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "first")
    flow = cocoindex.open_flow("Fifo", paragraph_flow(str(docs)))
    flow.setup()
    with cocoindex.FlowLiveUpdater(flow):
        time.sleep(0.3)
        os.mkfifo(docs / "pipe.md")
        write(docs / "b.md", "after the pipe")
        deadline = time.monotonic() + 15
        while sql.fetchval("SELECT count(*) FROM fifo__paragraphs WHERE filename = 'b.md'") == 0:
            assert time.monotonic() < deadline, "a FIFO blocked the source"
            time.sleep(0.05)
    assert flow.update().stats["documents"]["num_errors"] == 0
