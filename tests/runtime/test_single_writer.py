"""Exactly one writer per flow instance, across real processes on one database.

Every write to the target is logged by a trigger with the lease epoch and holder of the
transaction that made it (the fence sets them, see cocod.storage.leases), and with the
time it happened. "Never two writers at once" is then a property of the log: all rows
have an epoch, and the time ranges of the epochs do not overlap.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

import cocod as cocoindex
from tests.conftest import SqlHelper, write
from tests.daemon.harness import ROOT, DaemonProcess, eventually
from tests.daemon.harness_search import SlowParams, slow_factory, slow_instance
from tests.flows import paragraphs_of

COCOD = [sys.executable, "-m", "cocod.cli.main"]
TABLE = "docs_rows"

APP = """
import os
import cocod as cocoindex
from tests.daemon.harness_search import SlowParams, slow_factory

flow = cocoindex.open_flow(
    "docs", slow_factory(SlowParams(os.environ["DOCS"], "docs_rows", float(os.environ["DELAY"])))
)
"""

WRITER = """
import os, sys
import cocod as cocoindex
import app

for _ in range(int(sys.argv[1])):
    app.flow.update(full_reprocess=True)
print("writer done", flush=True)
"""

WRITE_LOG = f"""
CREATE TABLE wlog (epoch bigint, holder text, backend int, op text, filename text,
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO wlog (epoch, holder, backend, op, filename) VALUES (
        nullif(current_setting('cocod.lease_epoch', true), '')::bigint,
        current_setting('cocod.lease_holder', true), pg_backend_pid(), TG_OP,
        CASE WHEN TG_OP = 'DELETE' THEN OLD.filename ELSE NEW.filename END);
    RETURN NULL;
END $$;
CREATE TRIGGER log_write AFTER INSERT OR UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION log_write();
CREATE FUNCTION log_tracking() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO wlog (epoch, holder, backend, op) VALUES (
        nullif(current_setting('cocod.lease_epoch', true), '')::bigint,
        current_setting('cocod.lease_holder', true), pg_backend_pid(), 'tracking ' || TG_OP);
    RETURN NULL;
END $$;
CREATE TRIGGER log_tracking AFTER INSERT OR UPDATE OR DELETE ON cocod.tracking
    FOR EACH ROW EXECUTE FUNCTION log_tracking();
"""


def _env(database_url: str, docs: Path, delay: float) -> dict[str, str]:
    return {
        **os.environ,
        "COCOINDEX_DATABASE_URL": database_url,
        "COCOD_DATABASE_URL": database_url,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(docs.parent)]),
        "DOCS": str(docs),
        "DELAY": str(delay),
        "HF_HUB_OFFLINE": "1",
    }


def _set_up(database_url: str, tmp_path: Path, docs: Path, delay: float) -> dict[str, str]:
    """Set the flow up here, then add the write log to its table."""
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "writer.py").write_text(WRITER)
    cocoindex.init(cocoindex.Settings(database=cocoindex.DatabaseConnectionSpec(url=database_url)))
    flow = cocoindex.open_flow("docs", slow_factory(SlowParams(str(docs), TABLE, delay)))
    flow.setup()
    flow.close()
    cocoindex.stop()
    asyncio.run(_run_script(database_url, WRITE_LOG))
    return _env(database_url, docs, delay)


async def _run_script(database_url: str, script: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(script)
    finally:
        await conn.close()


def _assert_one_writer_at_a_time(sql: SqlHelper) -> dict[int, int]:
    """Every logged write has an epoch, and epochs follow each other without overlap."""
    rows = sql.fetch("SELECT epoch, at FROM wlog ORDER BY at")
    assert rows, "nothing was written"
    assert all(r["epoch"] is not None for r in rows), "a write ran outside a fenced lease"
    spans: dict[int, list[object]] = {}
    for r in rows:
        span = spans.setdefault(r["epoch"], [r["at"], r["at"]])
        span[1] = r["at"]
    ordered = sorted(spans.items())
    for (epoch, (_, end)), (later, (start, _)) in itertools.pairwise(ordered):
        assert end < start, f"epoch {epoch} wrote at {end}, after epoch {later} began at {start}"
    return {epoch: sum(1 for r in rows if r["epoch"] == epoch) for epoch in spans}


def _expected_rows(docs: Path) -> set[tuple[str, int, str]]:
    return {
        (path.name, p.index, p.text)
        for path in docs.iterdir()
        for p in paragraphs_of(path.read_text())
    }


def _rows(sql: SqlHelper) -> set[tuple[str, int, str]]:
    return {(r[0], r[1], r[2]) for r in sql.fetch(f"SELECT filename, index, text FROM {TABLE}")}


@pytest.fixture
def docs(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "docs"
    for i in range(8):
        write(folder / f"f{i}.md", "\n\n".join(f"file {i} part {j}" for j in range(3)))
    yield folder


def test_two_processes_updating_one_flow_never_write_at_once(
    tmp_path: Path, database_url: str, docs: Path
) -> None:
    env = _set_up(database_url, tmp_path, docs, delay=0.15)
    writers = [
        subprocess.Popen(
            [sys.executable, "writer.py", "3"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for w in writers:
            _, err = w.communicate(timeout=120)
            assert w.returncode == 0, err
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
                w.wait()
    sql = SqlHelper(database_url)
    per_epoch = _assert_one_writer_at_a_time(sql)
    assert len(per_epoch) >= 6  # every pass of both processes wrote under its own lease
    assert _rows(sql) == _expected_rows(docs)


def _edit_files(docs: Path, stop: threading.Event, seed: int) -> int:
    rng = random.Random(seed)
    edits = 0
    while not stop.is_set():
        path = docs / f"f{rng.randrange(8)}.md"
        count = rng.randint(1, 6)
        path.write_text("\n\n".join(f"{path.stem} v{edits} part {j}" for j in range(count)))
        edits += 1
        stop.wait(rng.uniform(0.05, 0.25))
    return edits


def test_one_shot_full_reprocess_runs_beside_a_watching_daemon_leave_no_orphans(
    tmp_path: Path, database_url: str, docs: Path
) -> None:
    """The issue's scenario: one-shot `update --full-reprocess` runs while the daemon
    watches the same flow and the files keep changing, with a slowed flow."""
    env = _set_up(database_url, tmp_path, docs, delay=0.2)
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    daemon = DaemonProcess(workdir, database_url, slow_instance("docs", docs, TABLE, True, 0.2))
    daemon.start()
    stop = threading.Event()
    editor = threading.Thread(target=_edit_files, args=(docs, stop, 14), daemon=True)
    try:
        eventually(lambda: daemon.state("docs") == "WATCHING", "the daemon to watch")
        editor.start()
        deadline = time.monotonic() + 14
        runs = refused = 0
        while time.monotonic() < deadline:
            batch = [
                subprocess.Popen(
                    [*COCOD, "update", "app.py", "--full-reprocess", "-q"],
                    cwd=tmp_path,
                    env={**env, "COCOD_LEASE_WAIT_SECONDS": "1"},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            for run in batch:
                _, err = run.communicate(timeout=120)
                # Refused, naming the owner, is the answer while the daemon owns the flow
                # (it holds the lease as long as it owns it); anything else is not.
                assert run.returncode == 0 or "is being written by host" in err, err
                refused += run.returncode != 0
                runs += 1
        stop.set()
        editor.join(timeout=10)
        sql = SqlHelper(database_url)
        expected = _expected_rows(docs)
        try:
            eventually(lambda: _rows(sql) == expected, "the daemon to catch up", timeout=40)
        except AssertionError:
            rows = _rows(sql)
            raise AssertionError(
                f"after {runs} one-shot runs: orphans {sorted(rows - expected)[:10]}, "
                f"missing {sorted(expected - rows)[:10]}"
            ) from None
        verify = daemon.cli("verify", "docs", "--json", check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        _assert_one_writer_at_a_time(sql)
    finally:
        stop.set()
        daemon.stop()


def _lease_backend(database_url: str) -> int | None:
    from cocod.storage.leases import LEASE_CLASSID

    value = SqlHelper(database_url).fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::int::oid "
        "AND objsubid = 2 AND granted",
        LEASE_CLASSID,
    )
    return None if value is None else int(str(value))


def _busy_backends(database_url: str) -> int:
    """Sessions other than the asking one inside a transaction right now."""
    return int(
        str(
            SqlHelper(database_url).fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND datname = current_database() AND backend_type = 'client backend' "
                "AND state IN ('active', 'idle in transaction')"
            )
        )
    )


def test_a_stopped_holder_past_its_lost_lock_writes_nothing_after_the_new_holder(
    tmp_path: Path, database_url: str, docs: Path
) -> None:
    for i in range(8, 40):
        write(docs / f"f{i}.md", f"file {i} alpha\n\nfile {i} beta")
    env = _set_up(database_url, tmp_path, docs, delay=0.5)
    sql = SqlHelper(database_url)
    old = subprocess.Popen(
        [sys.executable, "writer.py", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    new: subprocess.Popen[str] | None = None
    try:
        eventually(lambda: sql.fetchval("SELECT count(*) FROM wlog") != 0, "a first write")
        # Stop it outside a transaction (a stopped open transaction would hold the row
        # lock the takeover waits for, as it must: that case is the storage test's).
        for _ in range(50):
            old.send_signal(signal.SIGSTOP)
            if _busy_backends(database_url) == 0:
                break
            old.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        else:
            raise AssertionError("could not stop the writer outside a transaction")
        first_epoch = sql.fetchval("SELECT max(epoch) FROM wlog")
        backend = _lease_backend(database_url)
        assert backend is not None
        sql.fetch("SELECT pg_terminate_backend($1)", backend)
        new = subprocess.Popen(
            [sys.executable, "writer.py", "1"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        eventually(
            lambda: sql.fetchval("SELECT count(*) FROM wlog WHERE epoch > $1", first_epoch),
            "the new holder's first write",
            timeout=60,
        )
        old.send_signal(signal.SIGCONT)
        _, old_err = old.communicate(timeout=60)
        assert old.returncode != 0
        assert "no longer holds the lease" in old_err, old_err
        _, new_err = new.communicate(timeout=120)
        assert new.returncode == 0, new_err
    finally:
        for p in (old, new):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
    takeover = sql.fetchval("SELECT min(at) FROM wlog WHERE epoch > $1", first_epoch)
    late = sql.fetchval(
        "SELECT count(*) FROM wlog WHERE epoch = $1 AND at > $2", first_epoch, takeover
    )
    assert late == 0
    _assert_one_writer_at_a_time(sql)
    assert _rows(sql) == _expected_rows(docs)


def test_a_one_shot_update_waits_for_the_holder_and_names_it(
    tmp_path: Path, database_url: str, docs: Path
) -> None:
    from cocod.storage.leases import LeaseHolder, try_acquire

    env = _set_up(database_url, tmp_path, docs, delay=0.0)
    flow_id = int(
        str(
            SqlHelper(database_url).fetchval(
                "SELECT (state ->> 'flow_id')::int FROM cocod.setup_metadata "
                "WHERE flow_name = 'docs' AND resource = 'flow'"
            )
        )
    )

    async def hold_then_release(started: threading.Event, release: threading.Event) -> None:
        lease = await try_acquire(
            database_url, flow_id, LeaseHolder("host-x", 4242, "d-7", "daemon")
        )
        assert lease is not None
        epochs.append(lease.epoch)
        started.set()
        await asyncio.to_thread(release.wait)
        await lease.release()

    epochs: list[int] = []
    started, release = threading.Event(), threading.Event()
    holder = threading.Thread(
        target=lambda: asyncio.run(hold_then_release(started, release)), daemon=True
    )
    holder.start()
    assert started.wait(30)
    refused = subprocess.run(
        [*COCOD, "update", "app.py", "--no-wait"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "host-x" in refused.stderr and "4242" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    run = subprocess.Popen(
        [*COCOD, "update", "app.py"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert run.stderr is not None
        line = ""
        deadline = time.monotonic() + 60
        while "waiting for flow" not in line and time.monotonic() < deadline:
            line = run.stderr.readline()
            if not line and run.poll() is not None:
                break
        assert "waiting for flow 'docs': held by host host-x pid 4242 (daemon d-7)" in line
        assert run.poll() is None  # still waiting
        release.set()
        out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        assert "docs.documents" in out  # the stats line of the pass it ran after
    finally:
        release.set()
        if run.poll() is None:
            run.kill()
            run.wait()
        holder.join(timeout=10)
    rows = SqlHelper(database_url).fetch("SELECT epoch, holder_pid FROM cocod.leases")
    assert [(r[0], r[1]) for r in rows] == [(epochs[0] + 1, run.pid)]


def test_a_pass_that_may_not_wait_names_the_holder(
    tmp_path: Path, database_url: str, docs: Path
) -> None:
    """The library's no-wait pass (what ``cocod update --no-wait`` runs)."""
    from cocod.runtime.bridge import bridge
    from cocod.runtime.context import get_context
    from cocod.storage.leases import FlowBusyError, LeaseHolder, try_acquire

    _set_up(database_url, tmp_path, docs, delay=0.0)
    cocoindex.init(cocoindex.Settings(database=cocoindex.DatabaseConnectionSpec(url=database_url)))
    flow = cocoindex.open_flow("docs", slow_factory(SlowParams(str(docs), TABLE, 0.0)))
    try:
        flow.update()
        holder = LeaseHolder("host-y", 77, None, "cli")

        async def busy_pass() -> None:
            ctx = get_context()
            lease = await try_acquire(await ctx.open_database(), "docs", holder)
            assert lease is not None
            try:
                await flow.execution().update(ctx, lease_wait=0)
            finally:
                await lease.release()

        with pytest.raises(FlowBusyError) as caught:
            bridge.run(busy_pass())
        assert caught.value.holder == holder
        assert "host host-y pid 77" in str(caught.value)
    finally:
        flow.close()


HOLDER = """
import asyncio, sys
from cocod.storage.leases import LeaseHolder, try_acquire

async def main() -> None:
    holder = LeaseHolder("host-q", 4343, None, "cli")
    lease = await try_acquire(sys.argv[1], int(sys.argv[2]), holder)
    assert lease is not None, "the lease is not free"
    print("held", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    await lease.release()
    print("released", flush=True)

asyncio.run(main())
"""


def test_verify_repair_waits_for_another_process_holding_the_lease(
    tmp_path: Path, database_url: str, docs: Path
) -> None:
    """`cocod verify --repair` writes under the flow's lease: while a real second process
    holds it, `--no-wait` is refused naming the holder, and without it the repair waits
    (the daemon names the holder), then repairs once it is released, under a lease of its
    own."""
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    daemon = DaemonProcess(workdir, database_url, slow_instance("docs", docs, TABLE, False, 0.0))
    daemon.start()
    sql = SqlHelper(database_url)
    holder: subprocess.Popen[str] | None = None
    verify: subprocess.Popen[str] | None = None
    try:
        daemon.cli("update", "docs")  # on demand: set up on open, then indexed
        assert _rows(sql) == _expected_rows(docs)
        sql.execute(f"DELETE FROM {TABLE} WHERE filename = 'f3.md'")  # drift to repair
        flow_id = sql.fetchval(
            "SELECT (state ->> 'flow_id')::int FROM cocod.setup_metadata WHERE resource = 'flow'"
        )
        (tmp_path / "holder.py").write_text(HOLDER)
        holder = subprocess.Popen(
            [sys.executable, "holder.py", database_url, str(flow_id)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "held", holder.communicate()
        epoch = sql.fetchval("SELECT epoch FROM cocod.leases")

        refused = subprocess.run(
            [*COCOD, "verify", "docs", "--repair", "--no-wait"],
            cwd=workdir,
            env=daemon.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0, refused.stdout + refused.stderr
        assert "host host-q pid 4343" in refused.stderr, refused.stdout + refused.stderr
        assert not any(f == "f3.md" for f, _, _ in _rows(sql))  # nothing repaired

        logged = len(daemon.logs())
        verify = subprocess.Popen(
            [*COCOD, "verify", "docs", "--repair", "--json"],
            cwd=workdir,
            env=daemon.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        daemon.wait_for_log("flow.lease.waiting", after=logged)
        assert "host host-q pid 4343" in daemon.logs()[logged:]
        time.sleep(1.0)
        assert verify.poll() is None, verify.communicate()  # still waiting…
        assert not any(f == "f3.md" for f, _, _ in _rows(sql))  # …and nothing repaired
        assert sql.fetchval("SELECT holder_pid FROM cocod.leases") == 4343

        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        out, err = verify.communicate(timeout=60)
        assert verify.returncode == 0, out + err
        assert _rows(sql) == _expected_rows(docs)  # repaired after the holder left
        lease = sql.fetch("SELECT epoch, holder_pid FROM cocod.leases")
        assert [(r[0], r[1]) for r in lease] == [(epoch + 1, daemon.process.pid)]  # type: ignore[union-attr]
    finally:
        for p in (verify, holder):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        daemon.stop()
