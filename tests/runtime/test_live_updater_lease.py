"""A live updater holds one lease for its whole run, and retakes it when it is lost.

The lease row's epoch counts acquisitions: it must not move across many passes. A second
process's ``Flow.update()`` waits for the updater (naming it) and runs once it stops. When
the updater's lease session is killed and someone else takes the lease, the updater
writes nothing until it holds the lease again, says whom it waits for, then catches up.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cocod
from cocod.runtime.live_updater import FlowLiveUpdater, FlowLiveUpdaterOptions
from cocod.storage.leases import LEASE_CLASSID, LeaseHolder, try_acquire
from tests.conftest import SqlHelper, write
from tests.daemon.harness import ROOT
from tests.flows import paragraph_flow, paragraphs_of

pytestmark = pytest.mark.timeout(120)

TABLE = "live_rows"

OTHER_PROCESS = """
import sys
import cocod
from tests.flows import paragraph_flow

cocod.init(cocod.Settings(database=cocod.DatabaseConnectionSpec(url=sys.argv[1])))
flow = cocod.open_flow("docs", paragraph_flow(sys.argv[2], table_name="live_rows"))
print("updating", flush=True)
flow.update()
print("updated", flush=True)
cocod.stop()
"""


def _expected(docs: Path) -> set[tuple[str, int]]:
    return {(p.name, q.index) for p in docs.iterdir() for q in paragraphs_of(p.read_text())}


def _rows(sql: SqlHelper) -> set[tuple[str, int]]:
    return {(r[0], r[1]) for r in sql.fetch(f"SELECT filename, index FROM {TABLE}")}


def _wait(condition: object, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _lease(sql: SqlHelper) -> tuple[int, int]:
    row = sql.fetch("SELECT epoch, holder_pid FROM cocod.leases")
    assert len(row) == 1, row
    return int(row[0][0]), int(row[0][1])


@pytest.fixture
def running(cocod_db: str, tmp_path: Path) -> Iterator[tuple[FlowLiveUpdater, Path]]:
    docs = tmp_path / "docs"
    write(docs / "a.md", "one\n\ntwo")
    flow = cocod.open_flow("docs", paragraph_flow(str(docs), table_name=TABLE))
    flow.setup()
    updater = FlowLiveUpdater(flow, FlowLiveUpdaterOptions(live_mode=True))
    updater.start()
    try:
        yield updater, docs
    finally:
        updater.abort()
        try:
            updater.wait()
        finally:
            flow.close()


def test_one_lease_across_many_passes_and_another_process_waits_for_it(
    running: tuple[FlowLiveUpdater, Path], sql: SqlHelper, tmp_path: Path
) -> None:
    updater, docs = running
    _wait(lambda: _rows(sql) == _expected(docs), "the catch-up pass")
    epoch, holder_pid = _lease(sql)
    assert holder_pid == os.getpid()
    for i in range(5):
        write(docs / f"n{i}.md", f"new {i}\n\nmore {i}")
        _wait(lambda: _rows(sql) == _expected(docs), f"edit {i} indexed")
    assert updater.counters().passes >= 3  # several passes ran (bursts may coalesce)…
    assert _lease(sql) == (epoch, os.getpid())  # …under the one lease taken at the start
    assert updater.lease_epochs() == (1, epoch)

    (tmp_path / "other.py").write_text(OTHER_PROCESS)
    other = subprocess.Popen(
        [sys.executable, "other.py", sql.url, str(docs)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "updating"
        time.sleep(2.0)  # room for it to take the lease, were it free
        assert other.poll() is None, other.communicate()
        assert _lease(sql) == (epoch, os.getpid())
        updater.abort()
        updater.wait()
        out, err = other.communicate(timeout=60)
        assert other.returncode == 0, err
        assert "updated" in out
        # It said whom it waited for: this process.
        assert "flow.lease.waiting" in out + err and f"pid {os.getpid()}" in out + err, err
        assert _lease(sql) == (epoch + 1, other.pid)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def _lease_backend(sql: SqlHelper) -> int:
    return int(
        str(
            sql.fetchval(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND "
                "classid = $1::int::oid AND objsubid = 2 AND granted",
                LEASE_CLASSID,
            )
        )
    )


def test_a_lost_lease_stops_writing_waits_for_the_holder_then_continues(
    running: tuple[FlowLiveUpdater, Path], sql: SqlHelper
) -> None:
    updater, docs = running
    _wait(lambda: _rows(sql) == _expected(docs), "the catch-up pass")
    epoch, _ = _lease(sql)
    flow_id = int(str(sql.fetchval("SELECT flow_id FROM cocod.leases")))
    backend = _lease_backend(sql)
    took, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    async def kill_and_hold() -> None:
        # End the updater's lease session, then take the lease before it retakes it
        # (it waits its backoff first).
        await asyncio.to_thread(sql.fetch, "SELECT pg_terminate_backend($1, 5000)", backend)
        lease = None
        for _ in range(200):
            lease = await try_acquire(sql.url, flow_id, LeaseHolder("host-z", 999, None, "cli"))
            if lease is not None:
                break
            await asyncio.sleep(0.01)
        assert lease is not None, "the updater retook its lease at once"
        took.set()
        await asyncio.to_thread(release.wait)
        await lease.release()

    def run() -> None:
        try:
            asyncio.run(kill_and_hold())
        except BaseException as e:
            errors.append(e)
            took.set()

    holder = threading.Thread(target=run, daemon=True)
    holder.start()
    try:
        assert took.wait(30) and not errors, errors
        write(docs / "b.md", "written while the lease is elsewhere")
        _wait(lambda: updater.snapshot()["waiting_for_lease"] is not None, "the updater to wait")
        assert "host host-z pid 999" in str(updater.snapshot()["waiting_for_lease"])
        time.sleep(1.5)  # a change it sees, but may not write
        assert ("b.md", 0) not in _rows(sql)
        release.set()
        _wait(lambda: _rows(sql) == _expected(docs), "the edit indexed after the retake")
    finally:
        release.set()
        holder.join(timeout=10)
    assert not errors, errors
    # Taken back once: the epoch moved by two (the other holder's, then the updater's).
    assert _lease(sql) == (epoch + 2, os.getpid())
    assert updater.lease_epochs() == (2, epoch + 2)
    assert updater.snapshot()["waiting_for_lease"] is None
