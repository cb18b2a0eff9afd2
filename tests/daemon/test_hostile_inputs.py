"""Hostile files in one live instance of a real daemon (issue 9's first list, end to end).

Each test runs `cocod serve` with TWO live instances and puts the hostile input in one
instance's folder only; it asserts what the user sees (rows, the escaped name, the error
text) and that every other row of that instance and the other instance are intact.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SqlHelper, write
from tests.daemon.harness import DaemonProcess, eventually, instance


def rows(sql: SqlHelper, table: str) -> dict[str, str]:
    """filename → the text of its paragraphs, joined (empty while the table is missing)."""
    try:
        found = sql.fetch(f"SELECT filename, text FROM {table} ORDER BY filename, index")
    except Exception:
        return {}
    out: dict[str, str] = {}
    for filename, text in found:
        out[filename] = (out[filename] + "|" + text) if filename in out else text
    return out


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name in ("left", "right"):
        out[name] = tmp_path / name
        write(out[name] / "keep.md", f"{name} keep")
    return out


@pytest.fixture
def daemon(tmp_path: Path, database_url: str, folders: dict[str, Path]) -> Iterator[DaemonProcess]:
    config = instance("left", folders["left"], "left_rows") + instance(
        "right", folders["right"], "right_rows"
    )
    process = DaemonProcess(tmp_path, database_url, config).start()
    eventually(lambda: process.state("left") == "WATCHING", "left to watch")
    eventually(lambda: process.state("right") == "WATCHING", "right to watch")
    yield process
    process.stop()


def _other_instance_follows(sql: SqlHelper, folders: dict[str, Path], text: str) -> None:
    write(folders["right"] / "edit.md", text)
    eventually(lambda: rows(sql, "right_rows").get("edit.md") == text, "right's edit")
    assert rows(sql, "right_rows")["keep.md"] == "right keep"


def test_names_not_utf8_and_with_newlines_are_indexed_followed_and_deleted(
    daemon: DaemonProcess, database_url: str, folders: dict[str, Path]
) -> None:
    sql = SqlHelper(database_url)
    left = os.fsencode(folders["left"])
    latin1 = os.path.join(left, b"caf\xe9.md")
    newline = folders["left"] / "two\nlines.md"
    with open(latin1, "wb") as f:
        f.write(b"latin one")
    write(newline, "with a newline")
    write(folders["left"] / "plain.md", "plain after")

    expected = {
        "caf\\xe9.md": "latin one",
        "two\nlines.md": "with a newline",
        "keep.md": "left keep",
        "plain.md": "plain after",
    }
    eventually(lambda: rows(sql, "left_rows") == expected, "both hostile names indexed")
    _other_instance_follows(sql, folders, "right while left has odd names")

    with open(latin1, "wb") as f:
        f.write(b"latin two")
    eventually(
        lambda: rows(sql, "left_rows").get("caf\\xe9.md") == "latin two", "edit of caf\\xe9.md"
    )
    os.unlink(latin1)
    newline.unlink()
    eventually(
        lambda: rows(sql, "left_rows") == {"keep.md": "left keep", "plain.md": "plain after"},
        "both hostile names deleted",
    )
    (status,) = daemon.json("status", "left")
    assert status["state"] == "WATCHING"


def test_a_200_mb_sparse_file_is_a_row_error_naming_its_size_and_the_knob(
    daemon: DaemonProcess, database_url: str, folders: dict[str, Path]
) -> None:
    sql = SqlHelper(database_url)
    with open(folders["left"] / "huge.md", "wb") as f:
        f.truncate(200 * 10**6)
    write(folders["left"] / "small.md", "small beside huge")
    eventually(
        lambda: rows(sql, "left_rows") == {"keep.md": "left keep", "small.md": "small beside huge"},
        "left's other rows",
    )
    eventually(lambda: "max_file_size" in daemon.logs(), "the size error in the log", 60)
    line = next(x for x in daemon.logs().splitlines() if "max_file_size" in x)
    assert "huge.md" in line and "200000000 bytes" in line and "200 MB" in line
    _other_instance_follows(sql, folders, "right while left has a huge file")
    (status,) = daemon.json("status", "left")
    assert status["state"] == "WATCHING"


def test_symlinks_to_the_root_and_out_of_it_index_nothing_extra(
    daemon: DaemonProcess, database_url: str, folders: dict[str, Path]
) -> None:
    sql = SqlHelper(database_url)
    (folders["left"] / "self").symlink_to(".")
    (folders["left"] / "passwd.md").symlink_to("/etc/passwd")
    write(folders["left"] / "after.md", "after the links")
    eventually(lambda: "after.md" in rows(sql, "left_rows"), "left's edit after the links")
    daemon.cli("update", "left", "--full-reprocess")
    assert rows(sql, "left_rows") == {"keep.md": "left keep", "after.md": "after the links"}
    _other_instance_follows(sql, folders, "right while left has links")


def test_status_shows_pending_work_while_a_burst_of_2000_files_is_caught_up(
    daemon: DaemonProcess, database_url: str, folders: dict[str, Path]
) -> None:
    sql = SqlHelper(database_url)
    burst = folders["left"] / "burst"
    burst.mkdir()
    for i in range(2000):
        (burst / f"f{i:04}.md").write_text(f"burst {i}")
    seen: list[object] = []

    def done() -> bool:
        (status,) = daemon.json("status", "left")
        figures = [status.get("pending_changes", 0)] + [
            p.get("pending", 0) for p in status.get("sources", {}).values()
        ]
        seen.append(max(figures))
        return sql.fetchval("SELECT count(DISTINCT filename) FROM left_rows") == 2001

    eventually(done, "the burst to be indexed", 120)
    _other_instance_follows(sql, folders, "right after left's burst")
    assert rows(sql, "left_rows")["keep.md"] == "left keep"
    # Last, the one expected failure: any sample taken while files were unindexed.
    assert any(isinstance(n, int) and n > 0 for n in seen), f"status always showed {seen}"
