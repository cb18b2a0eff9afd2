"""``status`` while a long first pass runs: "catching up 12 / 120 files, ETA 30 s", from the
engine's progress reports (a real daemon over a slowed embedder), and the line itself."""

from __future__ import annotations

import time
from pathlib import Path

from cocod.daemon.progress_view import InstanceProgress, format_duration, progress_line
from cocod.engine.progress import PassProgress
from tests.daemon.harness import DaemonProcess, eventually
from tests.daemon.harness_ops import flow_section, status, write_files

FILES = 120


def test_status_shows_catching_up_progress_during_a_long_first_pass(
    tmp_path: Path, database_url: str
) -> None:
    docs = tmp_path / "docs"
    write_files(docs, FILES)
    config = flow_section("slow", docs, "slow_rows", "slow_factory")
    daemon = DaemonProcess(tmp_path, database_url, config).start()
    try:
        seen = eventually(
            lambda: (
                (s := status(daemon, "slow"))
                and s["state"] == "CATCHING_UP"
                and s["progress"]
                and 0 < s["progress"]["processed"] < FILES
                and s
            ),
            "progress in status during the first pass",
        )
        progress = seen["progress"]
        assert progress["candidates"] == FILES
        assert progress["listed"] == FILES
        assert progress["finished"] is False
        assert seen["progress_line"].startswith("catching up ")
        assert f" / {FILES} files" in seen["progress_line"]
        later = eventually(
            lambda: (
                (s := status(daemon, "slow"))["progress"]["processed"] > progress["processed"] and s
            ),
            "progress to move",
        )
        assert "ETA" in later["progress_line"]
        done = eventually(
            lambda: (s := status(daemon, "slow"))["state"] == "WATCHING" and s,
            "the first pass to end",
            60,
        )
        assert done["progress_line"] is None
        assert done["progress"]["finished"] is True
        assert done["progress"]["processed"] == FILES
    finally:
        assert daemon.stop() == 0


def test_progress_line_for_people() -> None:
    now = time.monotonic()
    listing = PassProgress("files", started_at=now - 5)
    assert progress_line(listing, now) == "listing files"
    running = PassProgress("files", started_at=now - 10, listed=10_000, candidates=10_000)
    assert progress_line(running, now) == "catching up 0 / 10,000 files"
    running.processed = 1_234
    # 1,234 rows in 10 s: the other 8,766 take about 71 s more.
    assert progress_line(running, now) == "catching up 1,234 / 10,000 files, ETA 1 min"
    running.finished = True
    assert progress_line(running, now) is None
    small = PassProgress("files", started_at=now, listed=500, candidates=2)
    assert progress_line(small, now) is None  # a hint pass: not worth a line
    assert progress_line(None) is None
    assert [format_duration(s) for s in (0.2, 42, 300, 4_800, 7_200)] == [
        "1 s",
        "42 s",
        "5 min",
        "1 h 20 min",
        "2 h",
    ]


def test_instance_progress_keeps_the_running_pass_and_counts_finished_rows() -> None:
    sink = InstanceProgress()
    assert sink.current() is None
    first = PassProgress("files", listed=3, candidates=3, processed=3, chunks=7)
    first.finished = True
    sink.on_progress(first)
    sink.on_progress(first)  # reported twice when finished: counted once
    assert sink.rows_written == 7
    assert sink.current() is first and sink.running() is None
    second = PassProgress("files", listed=3, candidates=1)
    sink.on_progress(second)
    assert sink.running() is second
