"""`cocod update NAME` sent to a standby daemon runs on the owner (forwarded through the
database), and still completes when the owner is killed while the standby waits.

Real ``cocod serve`` subprocesses share the test database; a write log on the target
records which lease holder (daemon id) and epoch wrote each row, so "the owner did the
writes" is read from the database.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from anyio.abc import TaskGroup
from blockbuster import BlockBuster

from cocod.daemon import forwarding
from cocod.daemon.cluster import Cluster
from cocod.daemon.forwarding import Forwarding, ForwardingTimeoutError
from cocod.runtime.bridge import bridge
from cocod.runtime.context import get_context
from cocod.storage.leases import LeaseHolder
from cocod.storage.pool import Pool, open_pool
from tests.conftest import SqlHelper, write
from tests.daemon.harness import COCOD, eventually
from tests.daemon.harness_cluster import (
    LEASE_TIMEOUT_S,
    Member,
    assert_one_writer_at_a_time,
    each_owned_once,
    install_write_log,
    spawn_member,
    stop_all,
    wait_answering,
    write_log,
)
from tests.daemon.harness_search import slow_instance
from tests.flows import paragraphs_of

pytestmark = pytest.mark.timeout(180)

TABLE = "docs_rows"


def _config(folder: Path, delay: float) -> str:
    return (
        f'[daemon]\nlease_timeout = "{LEASE_TIMEOUT_S:g}s"\nweight = 1\n'
        'drain_timeout = "10s"\n' + slow_instance("docs", folder, TABLE, True, delay)
    )


def _expected(folder: Path) -> set[tuple[str, int]]:
    return {
        (path.name, p.index) for path in folder.iterdir() for p in paragraphs_of(path.read_text())
    }


def _rows(sql: SqlHelper) -> set[tuple[str, int]]:
    if not sql.fetchval("SELECT to_regclass($1) IS NOT NULL", TABLE):
        return set()
    return {(r[0], r[1]) for r in sql.fetch(f"SELECT filename, index FROM {TABLE}")}


def _start_pair(tmp_path: Path, sql: SqlHelper, folder: Path, delay: float) -> list[Member]:
    members = [spawn_member(tmp_path, i, sql.url, _config(folder, delay)) for i in range(2)]
    wait_answering(members)
    return members


def _owner_and_standby(
    members: list[Member], sql: SqlHelper, folder: Path
) -> tuple[Member, Member]:
    """Once the instance has one owner, that owner caught up and the standby names it."""
    owners = eventually(lambda: each_owned_once(members, ["docs"]), "one owner", 60)
    owner = next(m for m in members if m.pid == owners["docs"])
    standby = next(m for m in members if m is not owner)
    eventually(lambda: _rows(sql) == _expected(folder), "the owner's catch-up", 60)

    def standby_names_owner() -> bool:
        status = standby.statuses()["docs"]
        return status["state"] == "STANDBY" and status["owner"]["pid"] == owner.pid

    eventually(standby_names_owner, "the standby to name the owner", 30)
    return owner, standby


def _pause(owner: Member, standby: Member) -> None:
    """No live pass: only the forwarded update writes (the pause reaches both)."""
    assert owner.process.request("pause", name="docs")["ok"]
    eventually(lambda: owner.statuses()["docs"]["state"] == "PAUSED", "the owner to pause")
    eventually(lambda: standby.statuses()["docs"]["paused"], "the standby to see the pause")


def _daemon_id(sql: SqlHelper, pid: int) -> str:
    return str(sql.fetchval("SELECT daemon_id FROM cocod.daemons WHERE pid = $1", pid))


def _update_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stdout + result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_update_sent_to_a_standby_runs_on_the_owner(tmp_path: Path, sql: SqlHelper) -> None:
    folder = tmp_path / "docs"
    write(folder / "a.md", "one\n\ntwo")
    members = _start_pair(tmp_path, sql, folder, delay=0.0)
    try:
        owner, standby = _owner_and_standby(members, sql, folder)
        install_write_log(sql, TABLE)
        _pause(owner, standby)
        write(folder / "b.md", "three\n\nfour")
        write(folder / "a.md", "one changed")

        # The real CLI, against the standby's socket.
        result = _update_json(standby.process.cli("update", "docs", "--json", check=False))
        assert result["served_by"]["pid"] == owner.pid, result
        assert _rows(sql) == _expected(folder)
        log = write_log(sql, TABLE)
        assert log, "the forwarded update wrote nothing"
        owner_id = _daemon_id(sql, owner.pid)
        assert {writer for writer, _ in log} == {owner_id}, log
        epoch = sql.fetchval("SELECT epoch FROM cocod.leases WHERE holder_pid = $1", owner.pid)
        assert {e for _, e in log} == {epoch}  # under the owner's lease, not a new one

        # --full-reprocess is forwarded too: every row is recomputed, by the owner.
        before = len(log)
        full = _update_json(
            standby.process.cli("update", "docs", "--full-reprocess", "--json", check=False)
        )
        assert full["served_by"]["pid"] == owner.pid
        rewritten = write_log(sql, TABLE)[before:]
        assert rewritten, full  # recomputed rows are written again
        assert {w for w, _ in rewritten} == {owner_id}

        # The request rows say who asked and who served.
        rows = sql.fetch("SELECT state, served_by, from_daemon FROM cocod.cluster_requests")
        standby_id = _daemon_id(sql, standby.pid)
        assert {(r[0], r[1], r[2]) for r in rows} == {("done", owner_id, standby_id)}
    finally:
        stop_all(members)


def test_a_forwarded_update_survives_its_owner_being_killed(tmp_path: Path, sql: SqlHelper) -> None:
    folder = tmp_path / "docs"
    write(folder / "seed.md", "seed")
    members = _start_pair(tmp_path, sql, folder, delay=0.25)
    try:
        owner, standby = _owner_and_standby(members, sql, folder)
        install_write_log(sql, TABLE)
        _pause(owner, standby)
        for i in range(24):
            write(folder / f"f{i:02}.md", f"file {i} alpha\n\nfile {i} beta")
        started = time.monotonic()
        update = subprocess.Popen(
            [*COCOD, "update", "docs", "--json"],
            env=standby.process.env,
            cwd=standby.process.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            owner_id = _daemon_id(sql, owner.pid)
            # The owner is running it (and wrote some of it): kill it mid-update.
            eventually(
                lambda: sql.fetchval(
                    "SELECT count(*) FROM cocod.cluster_requests WHERE state = 'running' "
                    "AND served_by = $1",
                    owner_id,
                ),
                "the owner to pick the request",
                60,
            )
            eventually(lambda: write_log(sql, TABLE), "the owner's first write", 30)
            # The real daemon records its pass's progress there for the standby to relay.
            source = eventually(
                lambda: sql.fetchval(
                    "SELECT progress->'events'->0->>'source' FROM cocod.cluster_requests "
                    "WHERE served_by = $1",
                    owner_id,
                ),
                "the owner's progress in the request's row",
                30,
            )
            assert source == "documents"
            owner.kill()
            out, err = update.communicate(timeout=90)
        finally:
            if update.poll() is None:
                update.kill()
                update.wait()
        elapsed = time.monotonic() - started
        assert update.returncode == 0, out + err
        result = json.loads(out)
        assert result["served_by"]["pid"] == standby.pid, result  # it became the owner
        assert _rows(sql) == _expected(folder)
        log = write_log(sql, TABLE)
        assert_one_writer_at_a_time(log)
        standby_id = _daemon_id(sql, standby.pid)
        assert log[0][0] == owner_id and log[-1][0] == standby_id, log
        # Failover (≤ lease_timeout) plus the rest of the update, with room for a loaded
        # 2-core machine; never the forwarding deadline.
        assert elapsed < 80, elapsed
    finally:
        stop_all(members)


# -- the request table itself, between in-process members (real Postgres, no daemon) -----
@asynccontextmanager
async def _member(
    pool: Pool | None = None, lease_timeout: float = 3.0, **forwarding: Any
) -> AsyncIterator[tuple[Cluster, Forwarding]]:
    """A cluster member with its forwarding, registered but not heartbeating (the test
    is shorter than its lease timeout); its LISTEN connection is open. It uses the
    context's pool unless given one of its own."""
    ctx = get_context()
    if pool is None:
        pool = await ctx.pool()
    cluster = Cluster(
        pool,
        await ctx.open_database(),
        ctx.schema,
        lease_timeout=lease_timeout,
        weight=1,
        version="t",
    )
    options: dict[str, Any] = {"servable": dict, "flow_name_of": lambda n: n, **forwarding}
    options.setdefault("run", _never)
    member = Forwarding(cluster, **options)
    holder = cluster.holder
    async with pool.acquire() as conn:
        await cluster.table.ensure(conn)  # registered, as a live daemon is
        await cluster.table.register(conn, cluster.daemon_id, holder.host, holder.pid, 1, "t")
    await cluster.listener.open()  # and holding its membership lock
    try:
        yield cluster, member
    finally:
        cluster.listener.close()


async def _never(name: str, command: str, args: dict[str, Any], emit: Any) -> dict[str, Any]:
    raise AssertionError("nothing may run this")


def _allow_what_must_block(bb: BlockBuster) -> None:
    """As tests/runtime/conftest.py allows: asyncpg reads ~/.pgpass as it connects, and
    the sync bridge blocks its (test) caller by contract."""
    for name in ("os.stat", "io.BufferedReader.read", "io.TextIOWrapper.read"):
        bb.functions[name].can_block_in("asyncpg/connect_utils.py", {"_read_password_file"})
    for name in ("threading.Lock.acquire", "threading.Lock.acquire_lock"):
        bb.functions[name].can_block_in("cocod/runtime/bridge.py", {"run", "_ensure_portal"})


def test_a_request_nobody_picks_is_a_typed_error_naming_the_owner(
    cocod_db: str, sql: SqlHelper, blockbuster: BlockBuster
) -> None:
    _allow_what_must_block(blockbuster)

    async def main() -> None:
        async with _member(pick_timeout=0.5) as (cluster, requester):
            cluster.owners["docs"] = LeaseHolder("host-o", 55, "d-9", "daemon")
            with anyio.fail_after(20), pytest.raises(ForwardingTimeoutError) as caught:
                await requester.forward("docs", "update", {"full_reprocess": False})
            assert "host host-o pid 55 (daemon d-9)" in str(caught.value)
            assert caught.value.owner == cluster.owners["docs"]

    bridge.run(main())
    # Withdrawn: an owner that comes back later does not run it behind the caller's back.
    assert sql.fetch("SELECT state FROM cocod.cluster_requests")[0][0] == "withdrawn"


def test_two_owners_racing_serve_a_request_once(
    cocod_db: str, sql: SqlHelper, blockbuster: BlockBuster
) -> None:
    _allow_what_must_block(blockbuster)
    runs: list[str] = []

    def server(tag: str) -> Any:
        async def run(name: str, command: str, args: dict[str, Any], emit: Any) -> dict[str, Any]:
            runs.append(tag)
            await anyio.sleep(0.2)
            return {"name": name, "stats": {}, "summary": f"ran by {tag}", "args": args}

        return run

    async def main() -> dict[str, Any]:
        servable = {"docs": "docs"}
        async with (
            _member(servable=lambda: servable, run=server("a")) as (_, a),
            _member(servable=lambda: servable, run=server("b")) as (_, b),
            _member() as (_, requester),
            anyio.create_task_group() as tg,
        ):
            await tg.start(a.serve)
            await tg.start(b.serve)
            with anyio.fail_after(20):
                reply = await requester.forward("docs", "update", {"full_reprocess": True})
            tg.cancel_scope.cancel()
        return reply

    reply = bridge.run(main())
    assert len(runs) == 1, runs
    assert reply["summary"] == f"ran by {runs[0]}" and reply["args"] == {"full_reprocess": True}
    rows = sql.fetch("SELECT state, reply IS NOT NULL FROM cocod.cluster_requests")
    assert [(r[0], r[1]) for r in rows] == [("done", True)]


def test_the_owners_progress_reaches_the_requesters_client(
    cocod_db: str, sql: SqlHelper, blockbuster: BlockBuster
) -> None:
    """A forwarded update's progress events are relayed: the requester's client sees the
    owner's pass advance before the reply, each state at most once, and the last one
    even when the command ends right after it (it is recorded with the reply)."""
    _allow_what_must_block(blockbuster)
    steps = [{"source": "documents", "processed": n, "finished": n == 3} for n in range(4)]

    async def run(name: str, command: str, args: dict[str, Any], emit: Any) -> dict[str, Any]:
        for step in steps:
            await emit({"event": "progress", "stage": "update", "name": name, **step})
            if step["processed"] < 2:  # each one is recorded as it comes
                await anyio.sleep(forwarding.PROGRESS_EVERY_S * 2)
            elif not step["finished"]:  # the last comes while the recorder still waits
                await anyio.sleep(forwarding.PROGRESS_EVERY_S / 10)
        return {"name": name, "stats": {}, "summary": "ran by the owner"}

    async def main() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []

        async def client(event: dict[str, Any]) -> None:
            seen.append(event)

        servable = {"docs": "docs"}
        async with (
            # Not heartbeating: a lease timeout longer than the test keeps the owner live.
            _member(servable=lambda: servable, run=run, lease_timeout=60.0) as (_, owner),
            _member(lease_timeout=60.0) as (_, requester),
            anyio.create_task_group() as tg,
        ):
            await tg.start(owner.serve)
            with anyio.fail_after(30):
                reply = await requester.forward("docs", "update", {}, client)
            tg.cancel_scope.cancel()
        assert reply["summary"] == "ran by the owner"
        return seen

    seen = bridge.run(main())
    assert seen[0]["stage"] == "forwarded", seen
    relayed = [e["processed"] for e in seen[1:]]
    # In order, once each. States held 2 s are all seen (the requester polls at most a
    # second apart); the one 0.1 s before the end may be overtaken; the last one, which
    # came after the recorder's last write, arrives with the reply.
    assert relayed[:2] == [0, 1] and relayed[-1] == 3, seen
    assert relayed == sorted(set(relayed)), seen
    assert all(e["event"] == "progress" and e["name"] == "docs" for e in seen[1:])


def test_old_requests_are_cleaned_up(
    cocod_db: str, sql: SqlHelper, blockbuster: BlockBuster
) -> None:
    _allow_what_must_block(blockbuster)

    async def main() -> int:
        async with _member() as (cluster, member):
            async with cluster.pool.acquire() as conn:
                await member.table.ensure(conn)
                for _ in range(4):
                    await member.table.insert(conn, "docs", "docs", "update", {}, "d-1")
            sql_ages = (
                "UPDATE cocod.cluster_requests SET state = 'done', finished = now() - "
                "interval '11 minutes' WHERE id = 1; UPDATE cocod.cluster_requests SET "
                "state = 'done', finished = now() - interval '1 minute' WHERE id = 2; "
                "UPDATE cocod.cluster_requests SET created = now() - interval '2 days' "
                "WHERE id = 3"
            )
            async with cluster.pool.acquire() as conn:
                await conn.execute(sql_ages)
                return await member.table.clean_up(conn, 60.0)

    assert bridge.run(main()) == 2
    # Kept: a recent finished one (for inspection) and a pending one.
    assert [r[0] for r in sql.fetch("SELECT id FROM cocod.cluster_requests ORDER BY id")] == [2, 4]


def test_an_abandoned_request_is_not_picked_later(
    cocod_db: str, sql: SqlHelper, blockbuster: BlockBuster
) -> None:
    """A request queued longer ago than the pick timeout (its requester gave up, perhaps
    unable to withdraw it) is never run; a fresh one is."""
    _allow_what_must_block(blockbuster)

    async def main() -> tuple[list[int], list[int], int]:
        async with _member() as (cluster, member):
            async with cluster.pool.acquire() as conn:
                await member.table.ensure(conn)
                old = await member.table.insert(conn, "docs", "docs", "update", {}, "d-1")
                await conn.execute(
                    "UPDATE cocod.cluster_requests SET queued = now() - interval '2 hours'"
                )
                fresh = await member.table.insert(conn, "docs", "docs", "update", {}, "d-1")
                picked = await member.table.pick(conn, ["docs"], "d-2", max_age_s=60.0)
                again = await member.table.pick(conn, ["docs"], "d-2", max_age_s=60.0)
                await member.table.clean_up(conn, 60.0)
            assert old < fresh
            return [p.id for p in picked], [p.id for p in again], fresh

    picked, again, fresh = bridge.run(main())
    assert picked == [fresh] and again == []
    # The abandoned one is marked withdrawn, so SQL inspection shows it given up.
    states = sql.fetch("SELECT id, state FROM cocod.cluster_requests ORDER BY id")
    assert [r[1] for r in states] == ["withdrawn", "running"]


REQUESTER_APP = "cocod-test-requester"


class _HeldCommand:
    """An owner's command that records each run, says it is running, and finishes when
    released (made inside the event loop: it holds anyio events)."""

    def __init__(self, runs: list[str]) -> None:
        self.runs = runs
        self.running = anyio.Event()
        self.release = anyio.Event()

    async def run(self, name: str, command: str, args: dict[str, Any], emit: Any) -> dict[str, Any]:
        self.runs.append(name)
        self.running.set()
        await self.release.wait()
        return {"name": name, "stats": {}, "summary": "ran by the owner"}


def _forward_soon(tg: TaskGroup, requester: Forwarding) -> tuple[list[dict[str, Any]], anyio.Event]:
    """Start ``update docs`` through ``requester`` in ``tg``: the list gets its reply, and
    the event is set then."""
    replies: list[dict[str, Any]] = []
    replied = anyio.Event()

    async def forward() -> None:
        replies.append(await requester.forward("docs", "update", {}))
        replied.set()

    tg.start_soon(forward)
    return replies, replied


def test_a_waiter_survives_its_database_session_being_killed(
    cocod_db: str, sql: SqlHelper, blockbuster: BlockBuster
) -> None:
    """While the owner runs a forwarded update, the requester's database session is
    terminated and new connections are refused for a while: it keeps waiting, and gets
    the owner's reply rather than a database error."""
    _allow_what_must_block(blockbuster)
    runs: list[str] = []

    async def main() -> dict[str, Any]:
        held = _HeldCommand(runs)
        servable = {"docs": "docs"}
        admin = await asyncpg.connect(_other_database(cocod_db))  # ALTERs this one
        requester_pool = await open_pool(
            f"{cocod_db}&application_name={REQUESTER_APP}", min_size=1, max_size=1
        )
        try:
            async with (
                _member(servable=lambda: servable, run=held.run) as (_, owner),
                _member(requester_pool) as (_, requester),
                anyio.create_task_group() as tg,
            ):
                await tg.start(owner.serve)
                replies, replied = _forward_soon(tg, requester)
                with anyio.fail_after(20):
                    await held.running.wait()
                    # Cut the requester off: its session ends, new ones are refused.
                    await admin.execute(
                        f"ALTER DATABASE {_current_database(cocod_db)} ALLOW_CONNECTIONS false"
                    )
                    killed = await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                        "WHERE application_name = $1",
                        REQUESTER_APP,
                    )
                    assert killed >= 1
                    await anyio.sleep(2.0)  # several polls fail meanwhile
                    assert not replies
                    await admin.execute(
                        f"ALTER DATABASE {_current_database(cocod_db)} ALLOW_CONNECTIONS true"
                    )
                    held.release.set()
                    await replied.wait()
                tg.cancel_scope.cancel()
            return replies[0]
        finally:
            await admin.execute(
                f"ALTER DATABASE {_current_database(cocod_db)} ALLOW_CONNECTIONS true"
            )
            await admin.close()
            await requester_pool.close()

    reply = bridge.run(main())
    assert reply["summary"] == "ran by the owner", reply
    assert runs == ["docs"]  # served once: the blip did not queue it again
    rows = sql.fetch("SELECT state FROM cocod.cluster_requests")
    assert [r[0] for r in rows] == ["done"]


def _current_database(url: str) -> str:
    return '"' + url.split("?", 1)[0].rsplit("/", 1)[-1] + '"'


def _other_database(url: str) -> str:
    """The server's ``postgres`` database: a database cannot refuse its own connections."""
    base, _, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/postgres?{query}"


def test_a_reply_the_owner_could_not_record_in_time_still_reaches_the_requester(
    cocod_db: str, sql: SqlHelper, blockbuster: BlockBuster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner finished the command while its request's row could not be written for
    longer than the reply deadline (here a lock another session holds on it): the owner,
    still alive, keeps trying, and the requester gets the reply once the row is free,
    instead of waiting for the forwarding deadline (hours)."""
    _allow_what_must_block(blockbuster)
    monkeypatch.setattr(forwarding, "REPLY_DEADLINE_S", 0.5)
    runs: list[str] = []

    async def main() -> dict[str, Any]:
        held = _HeldCommand(runs)
        servable = {"docs": "docs"}
        admin = await asyncpg.connect(cocod_db)
        # Members that do not heartbeat, with a lease timeout longer than the test: the
        # requester never takes the owner for dead and queues the request again.
        try:
            async with (
                _member(servable=lambda: servable, run=held.run, lease_timeout=60.0) as (_, owner),
                _member(lease_timeout=60.0) as (_, requester),
                anyio.create_task_group() as tg,
            ):
                await tg.start(owner.serve)
                replies, replied = _forward_soon(tg, requester)
                with anyio.fail_after(20):
                    await held.running.wait()
                    lock = admin.transaction()
                    await lock.start()
                    await admin.execute(
                        "SELECT id FROM cocod.cluster_requests WHERE state = 'running' FOR UPDATE"
                    )
                    held.release.set()
                    await anyio.sleep(2.0)  # four times the reply deadline
                    assert not replies
                    await lock.commit()
                    await replied.wait()
                tg.cancel_scope.cancel()
            return replies[0]
        finally:
            await admin.close()

    reply = bridge.run(main())
    assert reply["summary"] == "ran by the owner", reply
    assert runs == ["docs"]  # served once, its reply recorded late
    assert [r[0] for r in sql.fetch("SELECT state FROM cocod.cluster_requests")] == ["done"]
