"""`cocod verify NAME [--repair]` through the real CLI and daemon: drift made behind the
daemon's back is found (exit 4) and repaired to what the files produce (exit 0)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SqlHelper, write
from tests.daemon.harness import DaemonProcess, eventually, instance


@pytest.fixture
def daemon(tmp_path: Path, database_url: str) -> Iterator[DaemonProcess]:
    docs = tmp_path / "docs"
    for i in range(4):
        write(docs / f"f{i}.md", f"file {i} first\n\nfile {i} second")
    process = DaemonProcess(tmp_path, database_url, instance("docs", docs, "docs_rows")).start()
    yield process
    process.stop()


def rows(sql: SqlHelper) -> list[tuple[str, int, str]]:
    return sorted(
        (r["filename"], r["index"], r["text"])
        for r in sql.fetch("SELECT filename, index, text FROM docs_rows")
    )


def test_verify_finds_drift_and_repair_restores_the_table(
    daemon: DaemonProcess, database_url: str
) -> None:
    sql = SqlHelper(database_url)
    eventually(lambda: daemon.state("docs") == "WATCHING", "the instance to watch")
    eventually(lambda: len(rows(sql)) == 8, "the catch-up")
    built = rows(sql)

    clean = daemon.cli("verify", "docs", "--json")
    assert clean.returncode == 0, clean.stderr

    sql.execute("DELETE FROM docs_rows WHERE filename = 'f1.md'")
    sql.execute(
        "INSERT INTO docs_rows (filename, index, text, embedding) "
        "SELECT 'ghost.md', 0, 'orphan', embedding FROM docs_rows LIMIT 1"
    )
    sql.execute("UPDATE docs_rows SET text = 'tampered' WHERE filename = 'f2.md'")

    found = daemon.cli("verify", "docs", check=False)
    assert found.returncode == 4, (found.returncode, found.stdout, found.stderr)
    for kind in ("missing", "orphan", "altered"):
        assert kind in found.stdout, found.stdout

    repaired = daemon.cli("verify", "docs", "--repair", check=False)
    assert repaired.returncode == 0, (repaired.stdout, repaired.stderr)
    assert rows(sql) == built
    assert daemon.cli("verify", "docs", check=False).returncode == 0


def test_verify_of_an_unknown_instance_is_a_one_line_error(daemon: DaemonProcess) -> None:
    result = daemon.cli("verify", "nope", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("cocod: unknown_flow:"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
