"""Several real daemons on one database, and a write log in each target table.

Each daemon is a ``cocod serve`` subprocess with its own folder (socket, state, log) and
the test database's URL, so they share it as daemons on N hosts share one PostgreSQL.
:func:`install_write_log` puts a trigger on a target table that records, per written row,
which lease holder and epoch wrote it (the lease's fence sets ``cocod.lease_holder`` and
``cocod.lease_epoch`` for every write transaction), in commit order of the log's sequence.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import SqlHelper
from tests.daemon.harness import DaemonProcess, eventually, instance

LEASE_TIMEOUT_S = 3.0
NOT_OWNED = frozenset({"STANDBY", "STOPPED", "STOPPING", "BACKOFF", "FAILED"})


def cluster_config(
    flows: Iterable[tuple[str, Path, str]],
    *,
    weight: int = 1,
    lease_timeout: float = LEASE_TIMEOUT_S,
) -> str:
    """config.toml of one member: a short lease, and the given ``(name, folder, table)``."""
    text = (
        f'[daemon]\nlease_timeout = "{lease_timeout:g}s"\nweight = {weight}\n'
        'drain_timeout = "10s"\n'
    )
    for name, folder, table in flows:
        text += instance(name, folder, table)
    return text


@dataclass
class Member:
    """One daemon of the cluster, as the test drives it."""

    process: DaemonProcess

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    @property
    def is_running(self) -> bool:
        return self.process.process is not None and self.process.process.poll() is None

    def statuses(self) -> dict[str, dict[str, Any]]:
        try:
            reply = self.process.request("status", timeout=10.0)
        except OSError as e:  # busy or restarting: the caller's `eventually` asks again
            raise AssertionError(f"status did not answer: {e}") from e
        assert reply["ok"], reply
        return {s["name"]: s for s in reply["result"]}

    def owned(self) -> set[str]:
        """The instances this daemon runs (their state is neither STANDBY nor stopped)."""
        return {n for n, s in self.statuses().items() if s["state"] not in NOT_OWNED}

    def kill(self) -> None:
        self.process.signal(signal.SIGKILL)
        assert self.process.process is not None
        self.process.process.wait(timeout=10)
        self.process.process = None


def spawn_member(root: Path, index: int, database_url: str, config_text: str) -> Member:
    workdir = root / f"daemon{index}"
    workdir.mkdir(parents=True, exist_ok=True)
    process = DaemonProcess(workdir, database_url, config_text)
    process.spawn()
    return Member(process)


def wait_answering(members: Iterable[Member], timeout: float = 60.0) -> None:
    def answers(member: Member) -> bool:
        if not member.is_running:
            raise RuntimeError(f"a daemon exited; its log:\n{member.process.logs()[-3000:]}")
        return member.process.cli("ping", check=False).returncode == 0

    for member in members:
        eventually(lambda m=member: answers(m), "a daemon to answer", timeout)  # type: ignore[misc]


def owner_map(members: Iterable[Member]) -> dict[str, set[int]]:
    """Instance → pids of the running daemons that say they own it (by running it)."""
    owners: dict[str, set[int]] = {}
    for member in members:
        if not member.is_running:
            continue
        for name, status in member.statuses().items():
            owners.setdefault(name, set())
            if status["state"] not in NOT_OWNED:
                owners[name].add(member.pid)
    return owners


def each_owned_once(members: list[Member], names: Iterable[str]) -> dict[str, int] | None:
    """Instance → its one owner's pid when every instance has exactly one, else None."""
    owners = owner_map(members)
    result: dict[str, int] = {}
    for name in names:
        pids = owners.get(name, set())
        if len(pids) != 1:
            return None
        (result[name],) = pids
    return result


def install_write_log(sql: SqlHelper, table: str) -> None:
    """A trigger on ``table`` logging who wrote each row change (holder, epoch)."""
    sql.execute(
        "CREATE TABLE IF NOT EXISTS write_log (seq bigserial PRIMARY KEY, tbl text, "
        "op text, filename text, writer text, epoch bigint)"
    )
    sql.execute(
        "CREATE OR REPLACE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN INSERT INTO write_log (tbl, op, filename, writer, epoch) VALUES "
        "(TG_TABLE_NAME, TG_OP, CASE WHEN TG_OP = 'DELETE' THEN OLD.filename "
        "ELSE NEW.filename END, current_setting('cocod.lease_holder', true), "
        "nullif(current_setting('cocod.lease_epoch', true), '')::bigint); "
        "RETURN NULL; END $$"
    )
    sql.execute(
        f'CREATE TRIGGER "{table}_log" AFTER INSERT OR UPDATE OR DELETE ON "{table}" '
        "FOR EACH ROW EXECUTE FUNCTION log_write()"
    )


def write_log(sql: SqlHelper, table: str) -> list[tuple[str | None, int | None]]:
    rows = sql.fetch("SELECT writer, epoch FROM write_log WHERE tbl = $1 ORDER BY seq", table)
    return [(r["writer"], r["epoch"]) for r in rows]


def assert_one_writer_at_a_time(log: list[tuple[str | None, int | None]]) -> None:
    """Epochs only grow along the log: a smaller epoch after a larger one is an old
    owner writing after the new owner began (two writers at once)."""
    assert all(epoch is not None for _, epoch in log), f"a write without a lease: {log}"
    epochs = [epoch for _, epoch in log if epoch is not None]
    assert epochs == sorted(epochs), f"writers interleaved: {epochs}"
    writer_of: dict[int, str | None] = {}
    for writer, epoch in log:
        assert epoch is not None
        assert writer_of.setdefault(epoch, writer) == writer, f"epoch {epoch} has two writers"


def stop_all(members: Iterable[Member]) -> None:
    for member in members:
        if member.process.process is not None:
            if member.process.process.poll() is None:
                member.process.process.send_signal(signal.SIGCONT)
            member.process.stop(timeout=20)


__all__ = [
    "LEASE_TIMEOUT_S",
    "Member",
    "assert_one_writer_at_a_time",
    "cluster_config",
    "each_owned_once",
    "install_write_log",
    "owner_map",
    "spawn_member",
    "stop_all",
    "wait_answering",
    "write_log",
]
