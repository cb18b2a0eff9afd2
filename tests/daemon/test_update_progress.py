"""`cocod update NAME` shows the daemon's progress events: a bar under a terminal, plain
lines without one; the events themselves are PassProgress counts, rate-limited."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write
from tests.daemon.harness import COCOD, DaemonProcess, eventually
from tests.daemon.harness_search import slow_instance

FILES = 40


@pytest.fixture
def daemon(tmp_path: Path, database_url: str) -> Iterator[DaemonProcess]:
    for i in range(FILES):
        write(
            tmp_path / "docs" / f"doc{i:02}.md", f"paragraph one of {i}\n\nparagraph two of {i}\n"
        )
    process = DaemonProcess(
        tmp_path, database_url, slow_instance("docs", tmp_path / "docs", "progress_docs")
    ).start()
    process.cli("setup", "docs")
    yield process
    process.stop()


def test_update_streams_rate_limited_pass_progress(daemon: DaemonProcess) -> None:
    events: list[dict[str, Any]] = []
    started = time.monotonic()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(120)
        sock.connect(str(daemon.socket))
        sock.sendall(json.dumps({"id": 7, "cmd": "update", "args": {"name": "docs"}}).encode())
        sock.sendall(b"\n")
        with sock.makefile("rb") as stream:
            for line in stream:
                message = json.loads(line)
                if "ok" in message:
                    break
                events.append(message)
    elapsed = time.monotonic() - started
    assert message["ok"] and message["result"]["stats"]
    counts = [e for e in events if "processed" in e]
    assert counts, events
    assert all(e["id"] == 7 and e["event"] == "progress" and e["name"] == "docs" for e in counts)
    last = counts[-1]
    assert last["finished"] and last["listed"] == last["candidates"] == FILES
    assert last["processed"] == FILES and last["chunks"] == 2 * FILES
    assert {"rate", "eta_s", "source"} <= set(last)
    processed = [e["processed"] for e in counts]
    assert processed == sorted(processed)  # counts only grow within the pass
    # At most five a second (plus the last state of the pass and the opening ones).
    assert len(counts) <= 5 * elapsed + 3, (len(counts), elapsed)


def test_plain_progress_lines_when_not_on_a_terminal(daemon: DaemonProcess) -> None:
    result = daemon.cli("update", "docs", "--full-reprocess")
    lines = [line for line in result.stderr.splitlines() if line.startswith("docs: ")]
    assert lines, result.stderr
    assert re.fullmatch(rf"docs: {FILES} / {FILES} files, {2 * FILES} chunks, .*done", lines[-1])
    assert "\x1b" not in result.stderr and "\r" not in result.stderr  # no terminal codes
    assert result.stdout.strip()  # the summary, on stdout as before


def test_a_progress_bar_under_a_pseudo_terminal(daemon: DaemonProcess) -> None:
    output = _run_in_pty([*COCOD, "update", "docs", "--full-reprocess"], daemon)
    text = output.decode(errors="replace")
    assert "\x1b[" in text  # rich drew (and redrew) a live display
    assert "━" in text, text  # the bar itself
    assert f"{FILES}/{FILES}" in text and f"{2 * FILES} chunks" in text, text
    assert "files/s" in text


def test_status_shows_the_progress_of_a_running_update(tmp_path: Path, database_url: str) -> None:
    files = 60
    for i in range(files):
        write(tmp_path / "big" / f"doc{i:02}.md", f"paragraph of {i}\n")
    config = slow_instance("big", tmp_path / "big", "progress_big", delay=0.2)
    daemon = DaemonProcess(tmp_path, database_url, config).start()
    try:
        daemon.cli("setup", "big")
        update = subprocess.Popen(
            [*COCOD, "update", "big", "-q"], env=daemon.env, cwd=daemon.workdir
        )
        try:
            status = eventually(
                lambda: (
                    "catching up" in ((s := daemon.json("status", "big")[0])["progress_line"] or "")
                    and s
                ),
                "the running update's progress in status",
                timeout=120,
            )
            assert re.fullmatch(
                rf"catching up \d+ / {files} files(, ETA .+)?", status["progress_line"]
            )
            assert status["progress"]["candidates"] == files and not status["progress"]["finished"]
            assert update.wait(timeout=120) == 0
        finally:
            if update.poll() is None:
                update.kill()
                update.wait()
        (after,) = daemon.json("status", "big")
        assert after["progress"]["finished"] and after["progress_line"] is None
    finally:
        daemon.stop()


def _run_in_pty(command: list[str], daemon: DaemonProcess) -> bytes:
    """Run ``command`` with stdin, stdout and stderr on a new pseudo-terminal."""
    master, slave = pty.openpty()
    env = {**daemon.env, "TERM": "xterm-256color", "COLUMNS": "160"}
    process = subprocess.Popen(
        command, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=daemon.workdir
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
        process.wait()
    assert process.returncode == 0, b"".join(chunks)
    return b"".join(chunks)
