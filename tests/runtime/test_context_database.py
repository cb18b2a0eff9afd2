"""The database lifecycle a supervisor drives through ``LibraryContext``.

``open_database`` starts the embedded server off the event loop, ``ensure_database_running``
restarts it after it was killed behind cocod's back (a server these tests start in their
own state directory, never the session's shared one), ``aclose`` is bounded.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
import structlog.testing

from cocod.runtime.context import LibraryContext
from cocod.setting import DatabaseConnectionSpec, Settings
from cocod.storage.embedded_proc import is_postmaster, read_postmaster, wait_until


def _postmaster(state_dir: Path) -> int:
    running = read_postmaster((state_dir / "pgdata").resolve())
    assert running is not None
    return running.pid


def test_a_killed_embedded_server_is_restarted_and_queries_work_again(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    pgdata = (state_dir / "pgdata").resolve()
    ctx = LibraryContext(Settings(state_dir=state_dir))
    assert ctx.is_embedded

    async def main() -> None:
        with pytest.raises(RuntimeError, match="open_database"):
            _ = ctx.database_url  # would start the server on the loop
        urls: list[str] = []

        async def open_one() -> None:
            urls.append(await ctx.open_database())

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(open_one)
        assert len(set(urls)) == 1 and ctx.database_url == urls[0]
        pool = await ctx.pool()
        assert await pool.fetchval("SELECT 1") == 1
        assert await ctx.ensure_database_running() is True

        pid = await anyio.to_thread.run_sync(_postmaster, state_dir)
        os.kill(pid, signal.SIGKILL)
        gone = await anyio.to_thread.run_sync(
            lambda: wait_until(lambda: not is_postmaster(pid, pgdata), 15.0)
        )
        assert gone
        with structlog.testing.capture_logs() as logs:
            assert await ctx.ensure_database_running() is True
            assert await ctx.ensure_database_running() is True
        assert [e["event"] for e in logs].count("database.restarted") == 1
        assert await anyio.to_thread.run_sync(_postmaster, state_dir) != pid
        assert await pool.fetchval("SELECT 2") == 2

        await ctx.aclose(timeout=5.0)
        last = await anyio.to_thread.run_sync(_postmaster_or_zero, pgdata)
        assert not is_postmaster(last, pgdata)

    try:
        anyio.run(main)
    finally:
        ctx.release_embedded_now()


def _postmaster_or_zero(pgdata: Path) -> int:
    running = read_postmaster(pgdata)
    return 0 if running is None else running.pid


def test_release_embedded_now_stops_a_server_opened_synchronously(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    ctx = LibraryContext(Settings(state_dir=state_dir))
    url = ctx.database_url  # not on an event loop: starts the server here
    assert "host=" in url
    pid = _postmaster(state_dir)
    pgdata = (state_dir / "pgdata").resolve()
    assert is_postmaster(pid, pgdata)
    ctx.release_embedded_now()
    assert wait_until(lambda: not is_postmaster(pid, pgdata), 15.0)
    ctx.release_embedded_now()  # idempotent


def test_an_external_database_is_probed_and_a_dead_one_reported_once(
    database_url: str, tmp_path: Path
) -> None:
    up = LibraryContext(Settings(database=DatabaseConnectionSpec(url=database_url)))
    missing = tmp_path / "no-server-here"
    down = LibraryContext(
        Settings(
            database=DatabaseConnectionSpec(url=f"postgresql://postgres@/postgres?host={missing}")
        )
    )
    assert not up.is_embedded

    async def main() -> None:
        assert await up.ensure_database_running() is True
        with structlog.testing.capture_logs() as logs:
            assert await down.ensure_database_running() is False
            assert await down.ensure_database_running() is False
        assert [e["event"] for e in logs].count("database.down") == 1
        await up.aclose()
        await down.aclose()

    anyio.run(main)


def test_aclose_terminates_a_pool_that_does_not_close_in_time(database_url: str) -> None:
    ctx = LibraryContext(Settings(database=DatabaseConnectionSpec(url=database_url)))

    async def main() -> None:
        pool = await ctx.pool()
        held = await pool.acquire()  # never released: close() would wait for it for ever
        assert await held.fetchval("SELECT 1") == 1
        started = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            await ctx.aclose(timeout=0.5)
        assert time.monotonic() - started < 10.0  # generous: the bound is 0.5 s
        assert "context.pool_terminated" in [e["event"] for e in logs]
        assert pool.is_closing()

    anyio.run(main)
