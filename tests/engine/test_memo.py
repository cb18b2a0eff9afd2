"""Memoization: content-addressed per flow instance, reused across files and logic changes,
and garbage-collected once no row uses an entry for the retention period."""

from __future__ import annotations

import time
from pathlib import Path

import cocod as cocoindex
from tests.conftest import SqlHelper, write
from tests.flows import EMBED_CALLS, paragraph_flow


def _calls_during(action) -> list[str]:  # type: ignore[no-untyped-def]
    before = len(EMBED_CALLS)
    action()
    return EMBED_CALLS[before:]


def test_identical_paragraphs_in_other_files_and_renames_reuse_results(
    tmp_path: Path, sql: SqlHelper
) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "common\n\nonly in a")
    flow = cocoindex.open_flow("Reuse", paragraph_flow(str(docs)))
    flow.setup()
    assert sorted(_calls_during(flow.update)) == ["common", "only in a"]
    write(docs / "b.md", "common\n\nonly in b")
    assert _calls_during(flow.update) == ["only in b"]
    (docs / "b.md").rename(docs / "renamed.md")
    assert _calls_during(flow.update) == []
    assert sql.fetchval("SELECT count(*) FROM reuse__paragraphs WHERE filename = 'renamed.md'") == 2


def test_logic_change_reprocesses_rows_but_reuses_memo(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "short\n\na much longer paragraph")
    flow = cocoindex.open_flow("Logic", paragraph_flow(str(docs), table_name="logic"))
    flow.setup()
    flow.update()
    flow.close()
    flow = cocoindex.open_flow("Logic", paragraph_flow(str(docs), table_name="logic", min_length=6))
    flow.setup()
    before = len(EMBED_CALLS)
    info = flow.update()
    assert info.stats["documents"]["num_reprocesses"] == 1
    assert EMBED_CALLS[before:] == []
    assert [r[0] for r in sql.fetch("SELECT text FROM logic")] == ["a much longer paragraph"]


def test_unused_entries_are_collected_after_retention(tmp_path: Path, database_url: str) -> None:
    cocoindex.init(
        cocoindex.Settings(
            database=cocoindex.DatabaseConnectionSpec(url=database_url),
            memo_retention_seconds=0,
        )
    )
    sql = SqlHelper(database_url)
    docs = tmp_path / "docs"
    write(docs / "a.md", "one\n\ntwo\n\nthree")
    flow = cocoindex.open_flow("Collect", paragraph_flow(str(docs)))
    try:
        flow.setup()
        flow.update()
        assert sql.fetchval("SELECT count(*) FROM cocod.memo") == 3
        write(docs / "a.md", "one\n\nfour")
        flow.update()
        # "two" and "three" are no longer used by any row: gone; "one" is kept.
        assert sql.fetchval("SELECT count(*) FROM cocod.memo") == 2
        (docs / "a.md").unlink()
        flow.update()
        assert sql.fetchval("SELECT count(*) FROM cocod.memo") == 0
    finally:
        flow.close()


def _two_sources(first: str, second: str | None):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        out = scope.add_collector()
        sources = {"first": first} | ({"second": second} if second else {})
        for name, path in sources.items():
            scope[name] = fb.add_source(cocoindex.sources.LocalFile(path=path))
            with scope[name].row() as f:
                out.collect(filename=f["filename"], content=f["content"])
        out.export("files", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

    return define


def test_removed_source_rows_are_cleaned_up_at_setup(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "one" / "a.txt", "a")
    write(tmp_path / "two" / "b.txt", "b")
    flow = cocoindex.open_flow(
        "Sources", _two_sources(str(tmp_path / "one"), str(tmp_path / "two"))
    )
    flow.setup()
    flow.update()
    assert sql.fetchval("SELECT count(*) FROM sources__files") == 2
    flow.close()
    flow = cocoindex.open_flow("Sources", _two_sources(str(tmp_path / "one"), None))
    flow.setup()
    assert [r[0] for r in sql.fetch("SELECT filename FROM sources__files")] == ["a.txt"]
    assert sql.fetchval("SELECT count(*) FROM cocod.tracking") == 1


@cocoindex.op.function(cache=True, behavior_version=1)
def lies_about_its_type(text: str) -> str:
    return text.encode()  # type: ignore[return-value]  # bytes where str is declared


def test_failing_memo_encode_does_not_hang_later_passes(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "docs" / "a.md", "x")

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["docs"] = fb.add_source(cocoindex.sources.LocalFile(path=str(tmp_path / "docs")))
        out = scope.add_collector()
        with scope["docs"].row() as doc:
            doc["y"] = doc["content"].transform(lies_about_its_type)
            out.collect(filename=doc["filename"], y=doc["y"])
        out.export("ys", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

    flow = cocoindex.open_flow("Lies", define)
    flow.setup()
    assert flow.update().stats["docs"]["num_errors"] == 1
    # The retry (and any other row with the same input) must fail again, not wait forever.
    started = time.monotonic()
    assert flow.update().stats["docs"]["num_errors"] == 1
    assert time.monotonic() - started < 60


def _memo_hits(flow: cocoindex.Flow) -> int:
    built = flow._execution
    assert built is not None
    return sum(r.num_memo_hits for s in built.sources.values() for r in s.runners.values())


def test_memo_hits_are_counted_for_unchanged_chunks_of_a_changed_file(
    tmp_path: Path, sql: SqlHelper
) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "kept one\n\nkept two\n\nold tail")
    flow = cocoindex.open_flow("Hits", paragraph_flow(str(docs), table_name="hits"))
    flow.setup()
    flow.update()
    first = _memo_hits(flow)
    write(docs / "a.md", "kept one\n\nkept two\n\nnew tail")
    assert _calls_during(flow.update) == ["new tail"]
    assert _memo_hits(flow) - first == 2  # the two unchanged paragraphs came from the memo
