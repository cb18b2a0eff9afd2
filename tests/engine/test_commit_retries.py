"""A transient write failure is retried in the same pass; nothing is lost or duplicated.

Failures are injected by a real trigger on the target table: it raises a serialization
failure for the first N inserts it sees, counted by a sequence (which a rollback does not
undo, unlike a counter row).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog.testing

import cocod as cocoindex
from cocod.engine.committer import BATCH_COMMIT_ATTEMPTS
from cocod.errors import DatabaseUnavailableError
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow

FILES = 6


def _inject_failures(sql: SqlHelper, table: str, count: int, errcode: str = "40001") -> None:
    sql.execute(f"CREATE SEQUENCE {table}_failures")
    sql.execute(
        f"""CREATE OR REPLACE FUNCTION {table}_fail() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('{table}_failures') <= {count} THEN
                RAISE EXCEPTION 'injected write failure' USING ERRCODE = '{errcode}';
            END IF;
            RETURN NEW;
        END $$"""
    )
    sql.execute(
        f"CREATE TRIGGER {table}_fail BEFORE INSERT ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {table}_fail()"
    )


def _flow(tmp_path: Path, name: str) -> cocoindex.Flow:
    docs = tmp_path / "docs"
    for i in range(FILES):
        write(docs / f"f{i}.md", f"text {i}")
    flow = cocoindex.open_flow(name, paragraph_flow(str(docs)))
    flow.setup()
    return flow


def _assert_complete(sql: SqlHelper, table: str) -> None:
    rows = sql.fetch(f"SELECT filename, text FROM {table} ORDER BY filename")
    assert [tuple(r) for r in rows] == [(f"f{i}.md", f"text {i}") for i in range(FILES)]
    assert sql.fetchval("SELECT count(*) FROM cocod.tracking") == FILES


def test_transient_failures_of_batches_and_rows_converge_in_one_pass(
    tmp_path: Path, sql: SqlHelper
) -> None:
    flow = _flow(tmp_path, "Retry")
    # 4 batch attempts fail, then the first row alone fails twice more: both levels retry.
    _inject_failures(sql, "retry__paragraphs", 6)
    with structlog.testing.capture_logs() as logs:
        info = flow.update()
    stats = info.stats["documents"]
    assert stats["num_errors"] == 0 and stats["num_insertions"] == FILES
    _assert_complete(sql, "retry__paragraphs")
    retries = [e for e in logs if e["event"] == "row.commit_retry"]
    assert len(retries) == 5, retries
    assert all("injected write failure" in str(e["error"]) for e in retries)
    assert not [e for e in logs if e.get("log_level") == "error"]
    assert flow.update().stats["documents"]["num_no_change"] == FILES


def test_a_persistent_failure_is_a_row_error_and_the_next_pass_repairs_it(
    tmp_path: Path, sql: SqlHelper
) -> None:
    flow = _flow(tmp_path, "Stuck")
    _inject_failures(sql, "stuck__paragraphs", 1_000_000, errcode="40P01")  # deadlocks
    info = flow.update()
    assert info.stats["documents"]["num_errors"] == FILES
    assert sql.fetchval("SELECT count(*) FROM stuck__paragraphs") == 0
    assert sql.fetchval("SELECT count(*) FROM cocod.tracking") == 0  # nothing half-written
    sql.execute("DROP TRIGGER stuck__paragraphs_fail ON stuck__paragraphs")
    info = flow.update()
    assert info.stats["documents"]["num_insertions"] == FILES
    _assert_complete(sql, "stuck__paragraphs")


def test_a_permanent_error_fails_its_row_only_and_is_not_retried(
    tmp_path: Path, sql: SqlHelper
) -> None:
    flow = _flow(tmp_path, "Broken")
    sql.execute(
        """CREATE FUNCTION reject_f0() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.filename = 'f0.md' THEN RAISE EXCEPTION 'f0 is refused'; END IF;
            RETURN NEW;
        END $$"""
    )
    sql.execute(
        "CREATE TRIGGER reject_f0 BEFORE INSERT ON broken__paragraphs "
        "FOR EACH ROW EXECUTE FUNCTION reject_f0()"
    )
    with structlog.testing.capture_logs() as logs:
        info = flow.update()
    assert not [e for e in logs if e["event"] == "row.commit_retry"]
    (failure,) = [e for e in logs if e["event"] == "row.commit_failed"]
    assert failure["key"] == "f0.md" and "f0 is refused" in str(failure["error"])
    assert info.stats["documents"]["num_errors"] == 1
    assert info.stats["documents"]["num_insertions"] == FILES - 1
    sql.execute("DROP TRIGGER reject_f0 ON broken__paragraphs")
    assert flow.update().stats["documents"]["num_insertions"] == 1
    _assert_complete(sql, "broken__paragraphs")


def test_an_unreachable_database_stops_the_pass_instead_of_failing_every_row(
    tmp_path: Path, sql: SqlHelper
) -> None:
    flow = _flow(tmp_path, "Down")
    _inject_failures(sql, "down__paragraphs", 1_000_000, errcode="57P01")  # admin shutdown
    with structlog.testing.capture_logs() as logs, pytest.raises(DatabaseUnavailableError):
        flow.update()
    retries = [e for e in logs if e["event"] == "row.commit_retry"]
    assert len(retries) == BATCH_COMMIT_ATTEMPTS - 1  # one batch's attempts, then stop
    assert not [e for e in logs if e["event"] == "row.commit_failed"]
    assert sql.fetchval("SELECT count(*) FROM cocod.tracking") == 0
    sql.execute("DROP TRIGGER down__paragraphs_fail ON down__paragraphs")
    assert flow.update().stats["documents"]["num_insertions"] == FILES
    _assert_complete(sql, "down__paragraphs")
