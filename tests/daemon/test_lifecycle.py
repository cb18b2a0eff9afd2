"""The daemon's lifecycle under signals: at any moment of start-up, with a commit stuck on
someone else's lock, and with a factory that takes seconds to import."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import write
from tests.daemon.harness import DaemonProcess, eventually, instance
from tests.daemon.harness_ops import flow_section

DRAIN_TIMEOUT = 4.0


def _config(folder: Path, table: str, extra: str = "") -> str:
    return (
        f'[daemon]\ndrain_timeout = "{DRAIN_TIMEOUT}s"\n\n' + instance("one", folder, table) + extra
    )


def _exit_code_within(process: subprocess.Popen[bytes], seconds: float) -> int:
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"the daemon did not exit within {seconds} s") from None


@pytest.mark.parametrize("embedded", [False, True], ids=["external-db", "own-embedded-db"])
@pytest.mark.parametrize("delay", [0.05, 0.2, 1.0])
def test_sigterm_at_any_moment_of_start_up_exits_zero_within_drain_timeout(
    tmp_path: Path, database_url: str, delay: float, embedded: bool
) -> None:
    """With its own embedded server the daemon is still in initdb or the server start
    (in a worker thread) when the signal comes."""
    write(tmp_path / "docs" / "a.md", "one paragraph")
    url = None if embedded else database_url
    daemon = DaemonProcess(tmp_path, url, _config(tmp_path / "docs", "one_rows"))
    process = daemon.spawn()
    # "Starts": the daemon's first log line, before settings, database, registry or socket.
    daemon.wait_for_log("daemon.starting")
    time.sleep(delay)
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code = _exit_code_within(process, DRAIN_TIMEOUT + 5)
    elapsed = time.monotonic() - sent
    assert code == 0, daemon.logs()[-3000:]
    assert elapsed < DRAIN_TIMEOUT, f"exit took {elapsed:.1f} s"
    assert "Traceback" not in daemon.logs()
    if embedded:  # and it did not leave its server running
        pid_file = daemon.state_dir / "pgdata" / "postmaster.pid"
        eventually(lambda: not pid_file.exists(), "the embedded server to stop", 10)


class LockHolder:
    """A client of our own that holds ``LOCK TABLE ... ACCESS EXCLUSIVE`` until released."""

    def __init__(self, url: str, table: str) -> None:
        self._url, self._table = url, table
        self._locked = threading.Event()
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    async def _hold(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        conn = await asyncpg.connect(self._url)
        try:
            async with conn.transaction():
                await conn.execute(f"LOCK TABLE {self._table} IN ACCESS EXCLUSIVE MODE")
                self._locked.set()
                await self._release.wait()
        finally:
            await conn.close()

    def __enter__(self) -> LockHolder:
        self._thread.start()
        assert self._locked.wait(10), "could not take the lock"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)
        self._thread.join(10)


def _waiting_on_locks(url: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        finally:
            await conn.close()

    return asyncio.run(count())


@pytest.fixture
def watching(tmp_path: Path, database_url: str) -> Iterator[DaemonProcess]:
    write(tmp_path / "docs" / "a.md", "first")
    daemon = DaemonProcess(tmp_path, database_url, _config(tmp_path / "docs", "one_rows"))
    daemon.start()
    eventually(lambda: daemon.state("one") == "WATCHING", "the instance to watch")
    yield daemon
    daemon.stop(timeout=15)


def test_sigterm_exits_within_budget_while_a_commit_waits_on_another_clients_lock(
    watching: DaemonProcess, tmp_path: Path, database_url: str
) -> None:
    with LockHolder(database_url, "one_rows"):
        write(tmp_path / "docs" / "b.md", "an edit that cannot commit yet")
        eventually(lambda: _waiting_on_locks(database_url) > 0, "the daemon to wait on the lock")
        assert watching.process is not None
        watching.signal(signal.SIGTERM)
        sent = time.monotonic()
        code = _exit_code_within(watching.process, DRAIN_TIMEOUT + 10)
        elapsed = time.monotonic() - sent
    watching.process = None
    assert code == 0, watching.logs()[-3000:]
    assert elapsed < DRAIN_TIMEOUT + 2, f"exit took {elapsed:.1f} s"
    assert "daemon.shutdown_overrun" not in watching.logs()


def test_second_sigint_forces_exit_while_draining_is_stuck(
    watching: DaemonProcess, tmp_path: Path, database_url: str
) -> None:
    with LockHolder(database_url, "one_rows"):
        write(tmp_path / "docs" / "b.md", "an edit that cannot commit yet")
        eventually(lambda: _waiting_on_locks(database_url) > 0, "the daemon to wait on the lock")
        assert watching.process is not None
        watching.signal(signal.SIGINT)
        watching.wait_for_log("daemon.draining")
        watching.signal(signal.SIGINT)
        code = _exit_code_within(watching.process, 5)
    watching.process = None
    assert code == 130
    assert "daemon.forced_exit" in watching.logs()


SLOW_FACTORY = """
import time

time.sleep(5)  # an expensive import: a model, a big config, a network mount

from tests.daemon.flows import factory  # noqa: E402
"""


def test_a_factory_that_imports_for_seconds_does_not_delay_ping(
    tmp_path: Path, database_url: str
) -> None:
    write(tmp_path / "docs" / "a.md", "first")
    (tmp_path / "slow_factory.py").write_text(SLOW_FACTORY)
    config = _config(tmp_path / "docs", "one_rows") + instance(
        "slow", tmp_path / "docs", "slow_rows", definition="slow_factory:factory"
    )
    daemon = DaemonProcess(tmp_path, database_url, config).start()
    try:
        # READY may come while "slow" is still STOPPED or STANDBY (taking its lease);
        # the pings that count are those while its factory imports.
        eventually(lambda: daemon.state("slow") == "STARTING", "the slow import to begin", 4.0)
        round_trips = []
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline:
            listing = daemon.request("ls")["result"]
            if next(r["state"] for r in listing if r["name"] == "slow") != "STARTING":
                break  # only pings that overlap the slow import count
            started = time.monotonic()
            reply = daemon.request("ping")
            round_trips.append(time.monotonic() - started)
            assert reply["ok"] is True
            time.sleep(0.05)
        assert len(round_trips) >= 10, "the pings must overlap the slow import"
        assert max(round_trips) < 0.1, f"slowest ping {max(round_trips) * 1000:.0f} ms"
        eventually(lambda: daemon.state("slow") == "WATCHING", "the slow instance")
    finally:
        assert daemon.stop() == 0


class UnixProxy:
    """A TCP port that forwards to the test server's Unix socket while it is open: a
    database the daemon cannot reach until the test says so."""

    def __init__(self, unix_path: str) -> None:
        self.unix_path = unix_path
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        ready = threading.Event()

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while chunk := await reader.read(65536):
                    writer.write(chunk)
                    await writer.drain()
            writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_unix_connection(self.unix_path)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._server.serve_forever()

        self._thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
        self._thread.start()
        assert ready.wait(10)

    def close(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture
def unreachable_database(database_url: str) -> Iterator[tuple[str, UnixProxy]]:
    """A URL of the test database through a proxy that is not listening yet."""
    base, _, query = database_url.partition("?")
    socket_dir = dict(p.split("=", 1) for p in query.split("&"))["host"]
    (unix_path,) = [
        p for p in glob.glob(os.path.join(socket_dir, ".s.PGSQL.*")) if not p.endswith(".lock")
    ]
    proxy = UnixProxy(unix_path)
    database = base.rsplit("/", 1)[1]
    yield f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}", proxy
    proxy.close()


def test_a_database_not_up_at_start_is_waited_for_then_served(
    tmp_path: Path, unreachable_database: tuple[str, UnixProxy]
) -> None:
    url, proxy = unreachable_database
    write(tmp_path / "docs" / "a.md", "first")
    daemon = DaemonProcess(tmp_path, url, _config(tmp_path / "docs", "one_rows"))
    process = daemon.spawn()
    try:
        at = daemon.wait_for_log("daemon.database_waiting")
        daemon.wait_for_log("daemon.database_waiting", after=at + 1)  # it retries
        assert process.poll() is None, "a database that is not up yet is not fatal"
        proxy.open()
        eventually(lambda: daemon.cli("ping", check=False).returncode == 0, "the daemon", 60)
        eventually(lambda: daemon.state("one") == "WATCHING", "the instance to watch")
    finally:
        assert daemon.stop() == 0


def test_sigterm_while_waiting_for_the_database_exits_zero_at_once(
    tmp_path: Path, unreachable_database: tuple[str, UnixProxy]
) -> None:
    url, _ = unreachable_database
    daemon = DaemonProcess(tmp_path, url, _config(tmp_path / "docs", "one_rows"))
    process = daemon.spawn()
    daemon.wait_for_log("daemon.database_waiting")
    process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert _exit_code_within(process, DRAIN_TIMEOUT + 5) == 0, daemon.logs()[-3000:]
    assert time.monotonic() - sent < DRAIN_TIMEOUT


def test_embed_threads_caps_the_threads_torch_computes_with(
    tmp_path: Path, database_url: str
) -> None:
    """``[daemon] embed_threads`` applies before a flow's model code first runs."""
    write(tmp_path / "docs" / "a.md", "text")
    threads_file = tmp_path / "threads.txt"
    config = "[daemon]\nembed_threads = 1\n\n" + flow_section(
        "threads", tmp_path / "docs", "threads_rows", "threads_factory"
    )
    daemon = DaemonProcess(tmp_path, database_url, config)
    daemon.env["COCOD_TEST_THREADS_FILE"] = str(threads_file)
    daemon.env.pop("OMP_NUM_THREADS", None)
    daemon.start()
    try:
        eventually(threads_file.exists, "the flow to run", 60)
        assert threads_file.read_text() == "1"
    finally:
        assert daemon.stop() == 0
