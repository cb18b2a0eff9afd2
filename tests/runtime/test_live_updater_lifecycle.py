"""The live updater as a service: readiness means the watch is registered, serve() ends
with its scope, and a database outage neither spins nor loses a hint."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

import cocod
from cocod.errors import SetupOutOfDateError
from cocod.executors.local_file import LocalFileReader
from cocod.runtime.bridge import bridge
from cocod.runtime.live_updater import FlowLiveUpdater, FlowLiveUpdaterOptions
from cocod.runtime.watcher import ChangeHints, watch_source
from cocod.storage.embedded import EmbeddedPostgres, start_embedded_postgres
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow, paragraphs_of


def expected_rows(docs: Path) -> list[tuple[str, int, str]]:
    rows = []
    for path in sorted(docs.rglob("*")):
        if path.is_file():
            key = path.relative_to(docs).as_posix()
            rows.extend((key, p.index, p.text) for p in paragraphs_of(path.read_text()))
    return sorted(rows)


def table_rows(sql: SqlHelper, table: str) -> list[tuple[str, int, str]]:
    return sorted(tuple(r) for r in sql.fetch(f"SELECT filename, index, text FROM {table}"))


def wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- the watcher's readiness handshake ------------------------------------------------------
def test_a_file_written_right_after_ready_is_seen(tmp_path: Path) -> None:
    """started() means registered: an edit made the instant after is never missed."""
    docs = tmp_path / "docs"
    docs.mkdir()
    reader = LocalFileReader(cocod.sources.LocalFile(path=str(docs)))

    async def main() -> set[str]:
        seen: set[str] = set()
        got = anyio.Event()

        def sink(hints: ChangeHints) -> None:
            seen.update(hints.keys)
            if "first.md" in seen:
                got.set()

        async with anyio.create_task_group() as tg:
            await tg.start(watch_source, reader, sink)
            await anyio.to_thread.run_sync((docs / "first.md").write_text, "now")
            with anyio.fail_after(10):
                await got.wait()
            tg.cancel_scope.cancel()
        return seen

    assert "first.md" in anyio.run(main)


def test_a_name_that_is_not_utf8_is_hinted_and_watching_goes_on(tmp_path: Path) -> None:
    """watchfiles cannot name such a file: its folder is listed, or the root rescanned
    (so the file is found under its real name), and later edits are still seen."""
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    reader = LocalFileReader(cocod.sources.LocalFile(path=str(docs)))

    async def main() -> ChangeHints:
        total = ChangeHints()
        changed = anyio.Event()

        def sink(hints: ChangeHints) -> None:
            nonlocal changed
            total.keys |= hints.keys
            total.dirs |= hints.dirs
            total.rescan = total.rescan or hints.rescan
            changed.set()
            changed = anyio.Event()

        async def until(done: Callable[[], bool]) -> None:
            with anyio.fail_after(10):
                while not done():
                    await changed.wait()

        async with anyio.create_task_group() as tg:
            await tg.start(watch_source, reader, sink)
            path = os.fsencode(docs / "sub") + b"/caf\xe9.md"
            await anyio.to_thread.run_sync(_write_bytes_path, path)
            await until(lambda: total.rescan or "sub" in total.dirs)
            # Still watching (a new watch, if watchfiles gave up on the old one).
            await anyio.sleep(1.5)
            await anyio.to_thread.run_sync(write, docs / "later.md", "later")
            await until(lambda: "later.md" in total.keys)
            tg.cancel_scope.cancel()
        return total

    hints = anyio.run(main)
    assert hints.rescan or "sub" in hints.dirs


def _write_bytes_path(path: bytes) -> None:
    with open(path, "wb") as f:
        f.write(b"caf\xc3\xa9")


# -- serve() --------------------------------------------------------------------------------
def test_serve_runs_until_its_scope_is_cancelled(
    cocod_db: str, tmp_path: Path, sql: SqlHelper
) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "alpha")
    flow = cocod.open_flow("Served", paragraph_flow(str(docs)))
    flow.setup()
    updater = flow.live_updater()

    async def main() -> dict[str, object]:
        async with anyio.create_task_group() as tg:
            await tg.start(updater.serve)
            await updater.wait_caught_up_async()
            await anyio.to_thread.run_sync(write, docs / "b.md", "beta")
            with anyio.fail_after(15):
                while (  # noqa: ASYNC110 (polling the table, which has no event)
                    len(await anyio.to_thread.run_sync(table_rows, sql, "served__paragraphs")) < 2
                ):
                    await anyio.sleep(0.05)
            snapshot = updater.snapshot()
            tg.cancel_scope.cancel()
        return snapshot

    snapshot = bridge.run(main())
    assert snapshot["caught_up"] is True
    assert snapshot["database_down"] is False
    assert table_rows(sql, "served__paragraphs") == expected_rows(docs)
    # The v0 wait() of a cancelled service returns at once.
    updater.wait()


def test_serve_in_batch_mode_returns_when_done(
    cocod_db: str, tmp_path: Path, sql: SqlHelper
) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "one\n\ntwo")
    flow = cocod.open_flow("Batch", paragraph_flow(str(docs)))
    flow.setup()
    updater = flow.live_updater(FlowLiveUpdaterOptions(live_mode=False))

    async def main() -> None:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                await tg.start(updater.serve)

    bridge.run(main())
    assert table_rows(sql, "batch__paragraphs") == expected_rows(docs)


def test_serve_raises_setup_errors_before_ready(cocod_db: str, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "alpha")
    flow = cocod.open_flow("NotSetUp", paragraph_flow(str(docs)))
    updater = flow.live_updater()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            with pytest.raises(SetupOutOfDateError):
                await tg.start(updater.serve)

    bridge.run(main())


# -- a database outage ----------------------------------------------------------------------
@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A Postgres of this test alone: the test kills it."""
    server = start_embedded_postgres(tmp_path / "state")
    yield server
    cocod.stop()
    server.stop()


def test_database_outage_neither_spins_nor_loses_hints(
    own_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    cocod.init(cocod.Settings(database=cocod.DatabaseConnectionSpec(url=own_server.uri)))
    sql = SqlHelper(own_server.uri)
    docs = tmp_path / "docs"
    write(docs / "start.md", "before the outage")
    flow = cocod.open_flow("Outage", paragraph_flow(str(docs)))
    flow.setup()
    updater = FlowLiveUpdater(flow)
    updater.start()
    try:
        wait_for(
            lambda: table_rows(sql, "outage__paragraphs") == expected_rows(docs), 15, "catch-up"
        )
        # Commits are asynchronous (synchronous_commit=off): give the WAL writer time to
        # flush them, or the crash below may legitimately take the last ones with it.
        time.sleep(1.5)
        passes_before = updater.snapshot()["progress"]["documents"]["passes"]

        pid = own_server.postmaster_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not own_server.is_running(), 10, "the postmaster to die")

        cpu_before = time.process_time()
        window_end = time.monotonic() + 5.0
        i = 0
        while time.monotonic() < window_end:
            write(docs / f"new{i}.md", f"written during the outage {i}")
            write(docs / "start.md", f"edited during the outage {i}")
            write(docs / f"folder{i}" / "inner.md", f"in a new folder {i}")
            i += 1
            time.sleep(0.25)
        cpu_used = time.process_time() - cpu_before
        snapshot = updater.snapshot()
        attempts = snapshot["progress"]["documents"]["passes"] - passes_before

        assert snapshot["database_down"] is True, snapshot
        assert snapshot["pending_changes"] > 0, "hints were dropped while the database was down"
        assert attempts <= 10, f"{attempts} passes in 5 s: the retry spins"
        # A busy retry loop burns most of a core; backing off costs next to nothing.
        assert cpu_used < 2.0, f"{cpu_used:.2f} s of CPU in a 5 s outage"

        assert own_server.ensure_running()
        wait_for(
            lambda: table_rows(sql, "outage__paragraphs") == expected_rows(docs),
            60,
            "the table to converge after the database came back",
        )
        assert updater.snapshot()["database_down"] is False
    finally:
        updater.abort()
        updater.wait()
