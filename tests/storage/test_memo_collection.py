"""Memo collection costs what changed, in a fresh process too: no sweep of the whole memo."""

from __future__ import annotations

from pathlib import Path

import cocod as cocoindex
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow


def _memo_versions(sql: SqlHelper) -> dict[bytes, tuple[str, bool]]:
    """Each entry's row version (xmin changes whenever a statement writes the row)."""
    rows = sql.fetch("SELECT fp, xmin::text, orphaned_at IS NOT NULL FROM cocod.memo")
    return {bytes(r[0]): (r[1], r[2]) for r in rows}


def _open(database_url: str, retention: float) -> None:
    cocoindex.init(
        cocoindex.Settings(
            database=cocoindex.DatabaseConnectionSpec(url=database_url),
            memo_retention_seconds=retention,
        )
    )


def test_a_fresh_process_after_a_one_file_edit_touches_only_what_it_released(
    tmp_path: Path, database_url: str
) -> None:
    sql = SqlHelper(database_url)
    docs = tmp_path / "docs"
    for i in range(30):
        write(docs / f"f{i}.md", f"alpha {i}\n\nbeta {i}\n\ngamma {i}")
    _open(database_url, retention=3600)
    flow = cocoindex.open_flow("Fresh", paragraph_flow(str(docs)))
    flow.setup()
    flow.update()
    flow.close()
    cocoindex.stop()
    # An entry no row uses and nobody marked (as a crash of an old version could leave).
    sql.execute(
        "INSERT INTO cocod.memo (flow_id, fp, value) "
        "SELECT flow_id, 'unmarked', 'x' FROM cocod.memo LIMIT 1"
    )
    before = _memo_versions(sql)
    assert len(before) == 91

    _open(database_url, retention=3600)  # a fresh process: new Flow, new store
    flow = cocoindex.open_flow("Fresh", paragraph_flow(str(docs)))
    try:
        write(docs / "f7.md", "alpha 7\n\nBETA changed\n\ngamma 7")
        info = flow.update()
        assert info.stats["documents"]["num_updates"] == 1
        after = _memo_versions(sql)
        touched = {fp for fp, v in after.items() if before.get(fp) != v}
        added = set(after) - set(before)
        assert len(added) == 1  # "BETA changed"
        released = touched - added
        assert len(released) == 1  # "beta 7": marked, in the commit's transaction
        assert after[next(iter(released))][1] is True
        assert after[b"unmarked"] == before[b"unmarked"]  # no process sweeps the memo
        assert sum(1 for _, marked in after.values() if marked) == 1
    finally:
        flow.close()
        cocoindex.stop()

    _open(database_url, retention=0)  # another fresh process collects what is marked
    flow = cocoindex.open_flow("Fresh", paragraph_flow(str(docs)))
    try:
        write(docs / "f8.md", "alpha 8\n\nbeta 8")
        flow.update()
        remaining = _memo_versions(sql)
        # "beta 7" and "gamma 8" are gone; everything else, the unmarked entry included, stays.
        gone = (set(before) | added) - set(remaining)
        assert len(gone) == 2 and released <= gone
        assert b"unmarked" in remaining and not any(m for _, m in remaining.values())
    finally:
        flow.close()
