"""`cocod ping`, `status` and `ls` stay thin clients: they import what a socket round trip
needs and nothing more (issue 11: `cocod status` within a few ms of starting Python).

Each command runs as the real console script against a real `cocod serve`, with Python's
own import log (PYTHONPROFILEIMPORTTIME, the env form of ``-X importtime``), and is
compared with a bare ``python -c 'import socket, json'`` in the same environment: what the
command imports beyond that floor may only be cocod's own thin-client modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.apps import imported_modules
from tests.conftest import write
from tests.daemon.harness import DaemonProcess, eventually, instance

COCOD = str(Path(sys.executable).with_name("cocod"))

HEAVY = {"asyncpg", "anyio", "torch", "numpy", "structlog", "rich", "dotenv", "watchfiles"}
"""What the library and the daemon load; a thin client never does."""

SLOW_STDLIB = {"argparse", "dataclasses", "inspect", "asyncio", "shutil", "pathlib"}
"""Stdlib modules that cost milliseconds each; none is needed to send a request."""

CHEAP_STDLIB = {"__future__"}
"""Stdlib modules the thin client may load beyond the floor: `from __future__ import`
loads this tiny module in every cocod module."""


def _imported(command: list[str], env: dict[str, str], cwd: Path) -> tuple[set[str], str]:
    """The modules ``command`` imports (from Python's import-time log) and its stdout."""
    result = subprocess.run(
        command,
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert modules, "no import log: PYTHONPROFILEIMPORTTIME was not honoured"
    return modules - {"package"}, result.stdout  # "package" is the log's header row


@pytest.fixture
def daemon(tmp_path: Path, database_url: str) -> Iterator[DaemonProcess]:
    folder = tmp_path / "docs"
    write(folder / "a.md", "alpha\n\nbeta")
    process = DaemonProcess(tmp_path, database_url, instance("docs", folder, "thin_rows"))
    process.start()
    yield process
    process.stop()


HOT = [["ping"], ["status"], ["status", "docs", "--json"], ["ls"], ["ls", "--json"]]


def test_hot_commands_import_nothing_beyond_a_socket_and_json(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    eventually(lambda: daemon.json("ls"), "the instance to be listed")
    floor, _ = _imported([sys.executable, "-c", "import socket, json"], daemon.env, tmp_path)
    for argv in HOT:
        modules, out = _imported([COCOD, *argv], daemon.env, tmp_path)
        shown = f"`cocod {' '.join(argv)}`"
        assert "docs" in out or argv == ["ping"], f"{shown} printed {out!r}"  # it asked
        if "--json" in argv:
            json.loads(out)
        assert not modules & HEAVY, f"{shown} imports {sorted(modules & HEAVY)}"
        slow = (modules - floor) & SLOW_STDLIB
        assert not slow, f"{shown} imports {sorted(slow)}"
        extra = {m for m in modules - floor if m != "cocod" and not m.startswith("cocod.")}
        assert extra <= CHEAP_STDLIB, f"{shown} also imports {sorted(extra)}"
