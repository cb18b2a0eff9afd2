"""``verify`` finds each kind of drift injected behind cocod's back, and ``repair`` restores
a table equal to a from-scratch build of the same files (a second flow, a fresh table)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import cocod as cocoindex
from cocod.runtime.flow import Flow
from cocod.runtime.verify import VerifyReport, verify
from tests.conftest import SqlHelper, write
from tests.flows import EMBED_CALLS, paragraph_flow

TABLE = "verified_rows"
PAST_NS = 1_600_000_000 * 10**9  # far outside the racy window: ordinals are trusted


@dataclass
class Index:
    flow: Flow
    docs: Path
    sql: SqlHelper
    tmp: Path

    def rows(self, table: str = TABLE) -> list[tuple[Any, ...]]:
        return sorted(
            tuple(r)
            for r in self.sql.fetch(f"SELECT filename, index, text, embedding::text FROM {table}")
        )

    def fresh_rows(self) -> list[tuple[Any, ...]]:
        """The same files built from scratch by a second flow into its own table."""
        fresh = cocoindex.open_flow(
            "FreshBuild", paragraph_flow(str(self.docs), table_name="fresh")
        )
        fresh.setup()
        fresh.update()
        return self.rows("fresh")

    def verify_and_repair(self) -> VerifyReport:
        report = verify(self.flow)
        assert report.has_drift, report.describe()
        repaired = verify(self.flow, repair=True)
        assert repaired.after is not None and repaired.after.is_clean, repaired.describe()
        assert self.rows() == self.fresh_rows()
        json.dumps(repaired.to_dict())  # JSON-able, for the socket
        return report


@pytest.fixture
def index(tmp_path: Path, sql: SqlHelper) -> Iterator[Index]:
    docs = tmp_path / "docs"
    write(docs / "a.md", "alpha one\n\nalpha two")
    write(docs / "b.md", "beta")
    write(docs / "sub" / "c.md", "gamma one\n\ngamma two\n\ngamma three")
    for path in docs.rglob("*.md"):
        os.utime(path, ns=(PAST_NS, PAST_NS))
    flow = cocoindex.open_flow("Verified", paragraph_flow(str(docs), table_name=TABLE))
    flow.setup()
    flow.update()
    yield Index(flow, docs, sql, tmp_path)


def test_a_consistent_index_is_clean(index: Index) -> None:
    report = verify(index.flow)
    assert report.is_clean, report.describe()
    assert report.checked == {"tracking_rows": 3, "table_rows": 6, "files": 3}
    assert "no drift" in report.describe()
    assert json.loads(json.dumps(report.to_dict()))["findings"] == []


def test_deleted_rows_are_missing_and_repair_restores_them(index: Index) -> None:
    index.sql.execute(f"DELETE FROM {TABLE} WHERE filename = 'a.md'")
    index.flow.update()  # an ordinary pass trusts tracking: it restores nothing
    assert len(index.rows()) == 4
    report = index.verify_and_repair()
    assert report.count("missing_rows") == 2
    assert any("a.md" in s for s in report.finding("missing_rows", "paragraphs").samples)


def test_orphan_rows_are_found_and_deleted(index: Index) -> None:
    index.sql.execute(
        f"INSERT INTO {TABLE} (filename, index, text, embedding) "
        "VALUES ('ghost.md', 0, 'boo', '[1,2,3,4,5,6,7,8]'), ('a.md', 7, 'extra', NULL)"
    )
    report = index.verify_and_repair()
    assert report.count("orphan_rows") == 2
    assert report.has_drift and report.count("missing_rows") == 0


def test_altered_vector_and_text_are_found_and_rewritten(index: Index) -> None:
    index.sql.execute(f"UPDATE {TABLE} SET embedding = '[9,9,9,9,9,9,9,9]' WHERE filename = 'b.md'")
    index.sql.execute(f"UPDATE {TABLE} SET text = 'tampered' WHERE filename = 'a.md' AND index = 1")
    report = index.verify_and_repair()
    assert report.count("altered_rows") == 2


def test_repair_reuses_the_memo(index: Index) -> None:
    index.sql.execute(f"UPDATE {TABLE} SET embedding = '[9,9,9,9,9,9,9,9]'")
    calls = len(EMBED_CALLS)
    repaired = verify(index.flow, repair=True)
    assert repaired.count("altered_rows") == 6
    assert repaired.after is not None and repaired.after.is_clean
    assert len(EMBED_CALLS) == calls, "repair re-embedded texts the memo has"


def test_wrong_vector_dimension_is_found(index: Index) -> None:
    # A vector(8) column cannot hold another dimension: the column itself must have been
    # changed behind cocod's back first (its index goes with it).
    index.sql.execute("DROP INDEX IF EXISTS verified_rows__embedding__vector_cosine_ops")
    for name in index.sql.fetch(
        f"SELECT indexname FROM pg_indexes WHERE tablename = '{TABLE}' AND indexname <> "
        f"'{TABLE}_pkey'"
    ):
        index.sql.execute(f'DROP INDEX "{name[0]}"')
    index.sql.execute(f"ALTER TABLE {TABLE} ALTER COLUMN embedding TYPE vector")
    index.sql.execute(f"UPDATE {TABLE} SET embedding = '[1,2,3]' WHERE filename = 'b.md'")
    report = index.verify_and_repair()
    assert report.count("wrong_dimension") == 1
    assert report.count("column_mismatch") == 1
    assert report.count("missing_index") == 1
    assert "has 3 dimensions, declared 8" in report.describe()
    column_type = index.sql.fetchval(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        f"WHERE attrelid = '{TABLE}'::regclass AND attname = 'embedding'"
    )
    assert column_type == "vector(8)"
    assert index.sql.fetchval(f"SELECT count(*) FROM pg_indexes WHERE tablename = '{TABLE}'") == 2


def test_dropped_table_is_recreated_and_refilled(index: Index) -> None:
    index.sql.execute(f"DROP TABLE {TABLE}")
    report = index.verify_and_repair()
    assert report.count("missing_table") == 1
    assert report.count("missing_rows") == 6


def test_deleted_tracking_rows_are_found(index: Index) -> None:
    index.sql.execute("DELETE FROM cocod.tracking WHERE source_key = convert_to('a.md', 'UTF8')")
    report = index.verify_and_repair()
    assert report.count("orphan_rows") == 2  # its rows are no longer claimed by anyone
    assert report.finding("untracked_files", "documents").samples == ["a.md"]


def test_file_edited_with_same_mtime_and_size_is_stale(index: Index) -> None:
    path = index.docs / "a.md"
    path.write_text("ALPHA ONE\n\nalpha TWO")  # same size
    os.utime(path, ns=(PAST_NS, PAST_NS))
    index.flow.update()  # (mtime, size) unchanged: an ordinary pass cannot see it
    assert "ALPHA ONE" not in {r[2] for r in index.rows()}
    report = index.verify_and_repair()
    assert report.finding("stale_content", "documents").samples == ["a.md"]
    assert "ALPHA ONE" in {r[2] for r in index.rows()}


def test_tracking_of_gone_files_is_found(index: Index) -> None:
    (index.docs / "sub" / "c.md").unlink()
    report = index.verify_and_repair()
    assert report.finding("gone_files", "documents").samples == ["sub/c.md"]
    assert not any(r[0] == "sub/c.md" for r in index.rows())


def test_new_and_changed_files_are_pending_not_drift(index: Index) -> None:
    write(index.docs / "new.md", "brand new")
    write(index.docs / "b.md", "beta, edited")
    report = verify(index.flow)
    assert not report.has_drift and not report.is_clean, report.describe()
    assert report.count("untracked_files") == 1 and report.count("changed_files") == 1
    repaired = verify(index.flow, repair=True)
    assert repaired.after is not None and repaired.after.is_clean
    assert index.rows() == index.fresh_rows()
