"""The daemon keeps answering while its database is dead or frozen, restarts its embedded
server, and converges once it is back; the supervisor's retries are paced by backoff.

The end-to-end tests run a real daemon with its own embedded Postgres in the test's state
directory (no COCOD_DATABASE_URL), as a user's daemon does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from blockbuster import BlockingError

from cocod.daemon.database import DatabaseState, DatabaseWatch
from cocod.daemon.definitions import load_definition, load_definition_async
from tests.conftest import write
from tests.daemon.harness import DaemonProcess, eventually, instance

ANSWER_WITHIN = 1.0  # seconds: ping, ls and status answer from memory


# -- the supervisor in this process (blockbuster active: see conftest.py) ---------------------
def test_reports_while_down_do_not_make_the_supervisor_spin() -> None:
    checks: list[float] = []
    restarts: list[float] = []

    async def is_answering() -> str | None:
        checks.append(time.monotonic())
        return "connection refused"

    async def ensure_running() -> bool:
        restarts.append(time.monotonic())
        return False

    async def main() -> DatabaseWatch:
        watch = DatabaseWatch(is_answering, ensure_running)
        async with anyio.create_task_group() as tg:
            await tg.start(watch.serve)
            watch.report_down("a command failed")
            with anyio.move_on_after(3.0):
                while True:  # a storm of reports, as from many failing clients
                    watch.report_down("again")
                    await anyio.sleep(0.001)
            tg.cancel_scope.cancel()
        return watch

    watch = anyio.run(main)
    assert watch.state is not DatabaseState.UP
    # Backoff 0.5, 1, 2 s (with jitter): a handful of restarts in 3 s, not thousands.
    assert 1 <= len(restarts) <= 6, restarts
    assert len(checks) <= len(restarts) + 2


def test_the_database_coming_back_wakes_whoever_waits_for_it() -> None:
    answers = ["refused", "refused", None]

    async def is_answering() -> str | None:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    async def ensure_running() -> bool:
        return True

    states: list[DatabaseState] = []

    async def main() -> None:
        seen_down = anyio.Event()

        def changed(state: DatabaseState) -> None:
            states.append(state)
            if state is DatabaseState.DOWN:
                seen_down.set()

        watch = DatabaseWatch(is_answering, ensure_running, changed)
        async with anyio.create_task_group() as tg:
            await tg.start(watch.serve)
            watch.report_down("refused")
            with anyio.fail_after(10):
                await seen_down.wait()  # the report makes it check at once; the check fails
                await watch.wait_up()
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert states[0] is DatabaseState.DOWN and states[-1] is DatabaseState.UP
    assert DatabaseState.RESTARTING in states


def test_blockbuster_catches_user_code_blocking_the_loop(tmp_path: Path) -> None:
    (tmp_path / "blocking_factory.py").write_text(
        "import time\ntime.sleep(0.01)\nfrom tests.daemon.flows import factory\n"
    )
    params = {"source_path": str(tmp_path), "table": "t"}

    async def on_the_loop() -> None:
        load_definition("blocking_factory:factory", params, tmp_path, "blocking")

    with pytest.raises(BlockingError):
        anyio.run(on_the_loop)

    async def in_a_thread() -> None:
        await load_definition_async("blocking_factory:factory", params, tmp_path, "blocking")

    anyio.run(in_a_thread)


# -- the real daemon and its own embedded Postgres ----------------------------------------------
@pytest.fixture
def own_database_daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    write(tmp_path / "docs" / "a.md", "before the outage")
    config = '[daemon]\ndrain_timeout = "10s"\n\n' + instance("one", tmp_path / "docs", "one_rows")
    daemon = DaemonProcess(tmp_path, None, config)
    daemon.spawn()
    pids: list[int] = []
    try:
        eventually(lambda: daemon.cli("ping", check=False).returncode == 0, "the daemon", 120)
        eventually(lambda: daemon.state("one") == "WATCHING", "the instance to watch", 60)
        pids.append(daemon.postmaster_pid())
        yield daemon
    finally:
        for pid in pids:
            _signal_server(pid, signal.SIGCONT)
        assert daemon.stop(timeout=20) == 0, daemon.logs()[-3000:]
        with contextlib.suppress(FileNotFoundError, ValueError):
            pids.append(daemon.postmaster_pid())
        for pid in pids:  # the daemon stops its server; make sure of it whatever happened
            _signal_server(pid, signal.SIGKILL)


def _signal_server(postmaster: int, signum: signal.Signals) -> None:
    """The postmaster and its backends: freezing only the postmaster freezes nothing."""
    with contextlib.suppress(psutil.Error):
        processes = [psutil.Process(postmaster)]
        processes += processes[0].children(recursive=True)
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signum)


def _timed(daemon: DaemonProcess, cmd: str, **args: Any) -> dict[str, Any]:
    started = time.monotonic()
    reply = daemon.request(cmd, timeout=5.0, **args)
    elapsed = time.monotonic() - started
    assert elapsed < ANSWER_WITHIN, f"{cmd} took {elapsed:.2f} s"
    assert reply["ok"] is True, reply
    result: dict[str, Any] | list[dict[str, Any]] = reply["result"]
    return result[0] if isinstance(result, list) else result


def _texts(daemon: DaemonProcess) -> list[str]:
    result = daemon.cli("query", "one", "anything", "--top", "50", "--json", check=False)
    if result.returncode != 0:
        return []
    return sorted(r["text"] for r in json.loads(result.stdout)["results"])


def test_killed_embedded_postgres_is_restarted_and_edits_made_meanwhile_land(
    own_database_daemon: DaemonProcess, tmp_path: Path
) -> None:
    daemon = own_database_daemon
    eventually(lambda: _texts(daemon) == ["before the outage"], "the first row")
    config_file = daemon.state_dir / "pgdata" / "postgresql.conf"
    # Keep the restart failing for a while (no config file, no server), so the outage
    # is long enough to look at; then let it succeed.
    config_file.rename(config_file.with_suffix(".away"))
    try:
        os.kill(daemon.postmaster_pid(), signal.SIGKILL)
        down = eventually(
            lambda: (s := _timed(daemon, "status", name="one"))["state"] == "DATABASE_DOWN" and s,
            "the instance to show DATABASE_DOWN",
            30,
        )
        assert down["database"] in ("down", "restarting")
        assert _timed(daemon, "ping")["database"] in ("down", "restarting")
        assert _timed(daemon, "ls")["database"] in ("down", "restarting")
        write(tmp_path / "docs" / "b.md", "written during the outage")
        write(tmp_path / "docs" / "a.md", "edited during the outage")
        failed = daemon.cli("update", "one", check=False)
        assert failed.returncode != 0
        assert "database_unavailable" in failed.stderr, failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
        # An instance (re)started meanwhile fails its setup for want of a database: it
        # waits for it, and that is not a failure of the flow.
        daemon.cli("close", "one")
        daemon.cli("open", "one")
        waiting = eventually(
            lambda: (s := _timed(daemon, "status", name="one"))["state"] == "DATABASE_DOWN" and s,
            "the reopened instance to wait for the database",
            30,
        )
        assert waiting["failures"] == 0, waiting
        for _ in range(5):
            assert _timed(daemon, "status", name="one")["state"] == "DATABASE_DOWN"
            time.sleep(0.2)
    finally:
        config_file.with_suffix(".away").rename(config_file)
    eventually(lambda: _timed(daemon, "ping")["database"] == "up", "the restarted server", 60)
    eventually(lambda: daemon.state("one") == "WATCHING", "the instance to watch again", 30)
    eventually(
        lambda: _texts(daemon) == ["edited during the outage", "written during the outage"],
        "the edits made during the outage",
        60,
    )
    assert "embedded_postgres.started" in daemon.logs()
    assert "instance.failed" not in daemon.logs()
    # After the restart the daemon checks the instance against its files on its own.
    eventually(lambda: "verify.after_restart" in daemon.logs(), "verification after restart")
    assert "verify.after_restart_failed" not in daemon.logs()


def test_frozen_postgres_does_not_stop_status_or_ping_and_the_daemon_converges(
    own_database_daemon: DaemonProcess, tmp_path: Path
) -> None:
    daemon = own_database_daemon
    eventually(lambda: _texts(daemon) == ["before the outage"], "the first row")
    postmaster = daemon.postmaster_pid()
    _signal_server(postmaster, signal.SIGSTOP)
    try:
        write(tmp_path / "docs" / "b.md", "written while frozen")
        deadline = time.monotonic() + 5.0
        answered = 0
        while time.monotonic() < deadline:
            _timed(daemon, "status")
            _timed(daemon, "ping")
            _timed(daemon, "ls")
            answered += 1
            time.sleep(0.2)
        assert answered >= 10
    finally:
        _signal_server(postmaster, signal.SIGCONT)
    eventually(lambda: _timed(daemon, "ping")["database"] == "up", "the database", 60)
    eventually(
        lambda: _texts(daemon) == ["before the outage", "written while frozen"],
        "the edit made while frozen",
        60,
    )
    eventually(lambda: daemon.state("one") == "WATCHING", "the instance to watch", 30)
