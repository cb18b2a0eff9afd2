"""A full pass compares its listing with the tracking in the database and looks only at
what differs; its progress (listed, candidates, processed, chunks) says so.

Why through progress: a one-file edit in a fresh process must cost the stat() walk and
one query, never a row of work per tracked file; the candidates a pass reports are the
rows it read, so a regression that makes every tracked file a candidate fails here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cocod as cocoindex
from cocod.engine.progress import PassProgress
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow


class Recorder:
    """Keeps a snapshot of every progress event (the engine reuses one object)."""

    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def __call__(self, progress: PassProgress) -> None:
        self.events.append(progress.as_dict())

    def last(self) -> dict[str, object]:
        assert self.events, "no progress was reported"
        return self.events[-1]


def _settled(path: Path, text: str) -> Path:
    """Write a file with an mtime in the past: a just-written file's ordinal is not trusted
    (it may change again within the same timestamp tick), so it would be re-read."""
    write(path, text)
    past = time.time_ns() - 3600 * 10**9
    os.utime(path, ns=(past, past))
    return path


def _update(flow: cocoindex.Flow) -> tuple[dict[str, object], dict[str, int]]:
    rec = Recorder()
    info = flow.update(progress=rec)
    final = rec.last()
    assert final["finished"] is True
    assert all(e["finished"] is False for e in rec.events[:-1])
    return final, info.stats["documents"]


def test_only_changed_new_and_gone_files_are_candidates(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    for i in range(30):
        _settled(docs / f"d{i % 3}" / f"f{i}.md", f"first {i}\n\nsecond {i}")
    flow = cocoindex.open_flow("Diff", paragraph_flow(str(docs), table_name="diff"))
    flow.setup()

    final, stats = _update(flow)
    assert (final["listed"], final["candidates"], final["processed"]) == (30, 30, 30)
    assert final["chunks"] == 60
    assert stats["num_insertions"] == 30

    final, stats = _update(flow)  # nothing changed
    assert (final["listed"], final["candidates"], final["processed"]) == (30, 0, 0)
    assert stats["num_no_change"] == 30

    _settled(docs / "d1" / "f4.md", "first 4\n\nsecond 4, edited")
    (docs / "d2" / "f5.md").unlink()
    _settled(docs / "d0" / "new.md", "brand new")
    touched = docs / "d0" / "f0.md"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # same content
    final, stats = _update(flow)
    assert (final["listed"], final["candidates"], final["processed"]) == (30, 4, 4)
    assert final["chunks"] == 2  # the edited paragraph and the new file's
    assert stats["num_updates"] == 1
    assert stats["num_deletions"] == 1
    assert stats["num_insertions"] == 1
    assert stats["num_no_change"] == 28  # 27 untouched + the touched one (same content)
    rows = sql.fetch("SELECT filename, text FROM diff ORDER BY filename, text")
    files = {r["filename"] for r in rows}
    assert "d2/f5.md" not in files and "d0/new.md" in files
    assert ("d1/f4.md", "second 4, edited") in {(r["filename"], r["text"]) for r in rows}

    final, _ = _update(flow)  # the touched file's new ordinal was recorded
    assert final["candidates"] == 0
    flow.close()


def test_a_logic_change_makes_every_file_a_candidate(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    for i in range(5):
        _settled(docs / f"f{i}.md", f"short\n\na longer paragraph {i}")
    flow = cocoindex.open_flow("DiffLogic", paragraph_flow(str(docs), table_name="diff_logic"))
    flow.setup()
    flow.update()
    flow.close()
    flow = cocoindex.open_flow(
        "DiffLogic", paragraph_flow(str(docs), table_name="diff_logic", min_length=6)
    )
    flow.setup()
    final, stats = _update(flow)
    assert (final["listed"], final["candidates"]) == (5, 5)
    assert stats["num_reprocesses"] == 5
    assert sql.fetchval("SELECT count(*) FROM diff_logic") == 5
    flow.close()


def test_reexport_looks_at_every_row(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    for i in range(4):
        _settled(docs / f"f{i}.md", f"text {i}")
    flow = cocoindex.open_flow("DiffReexport", paragraph_flow(str(docs), table_name="diff_re"))
    flow.setup()
    flow.update()
    sql.execute("DELETE FROM diff_re")
    rec = Recorder()
    flow.update(reexport_targets=True, progress=rec)
    assert (rec.last()["listed"], rec.last()["candidates"]) == (4, 4)
    assert sql.fetchval("SELECT count(*) FROM diff_re") == 4
    flow.close()


def test_odd_names_are_compared_by_their_bytes(tmp_path: Path, sql: SqlHelper) -> None:
    """Keys travel to the server two ways (ASCII as JSON text, the rest as bytes): names
    with JSON and list metacharacters, non-ASCII and non-UTF-8 names all round-trip."""
    docs = tmp_path / "docs"
    names = ['a,"b\\\n.md', "é/ü.md", "plain.md"]
    for name in names:
        _settled(docs / name, f"text of {name}")
    raw = os.fsencode(docs) + b"/\xff\xfe.md"  # not UTF-8: a lone-surrogate key
    with open(raw, "wb") as f:
        f.write(b"bytes name")
    past = time.time_ns() - 3600 * 10**9
    os.utime(raw, ns=(past, past))
    flow = cocoindex.open_flow("DiffNames", paragraph_flow(str(docs), table_name="diff_names"))
    flow.setup()
    final, stats = _update(flow)
    assert (final["listed"], final["candidates"]) == (4, 4)
    assert stats["num_insertions"] == 4

    final, _ = _update(flow)
    assert final["candidates"] == 0

    for name in names[:2]:
        _settled(docs / name, f"new text of {name}")
    os.utime(raw, ns=(past + 10**9, past + 10**9))
    final, stats = _update(flow)
    assert (final["listed"], final["candidates"]) == (4, 3)
    assert stats["num_updates"] == 2 and stats["num_no_change"] == 2
    texts = {r["text"] for r in sql.fetch("SELECT text FROM diff_names")}
    assert {f"new text of {n}" for n in names[:2]} <= texts
    flow.close()
