"""``pause``/``resume`` on a real daemon: one instance stops updating while the other stays
live, hints collected while paused are caught up on resume, and a paused instance stays
paused across a daemon restart (then resume runs a full pass)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import SqlHelper, write
from tests.daemon.harness import DaemonProcess, eventually, instance
from tests.daemon.harness_ops import command, flow_section, status, write_files


def texts(sql: SqlHelper, table: str) -> set[str]:
    try:
        return {r[0] for r in sql.fetch(f"SELECT text FROM {table}")}
    except Exception:
        return set()


def _two_instances(tmp_path: Path) -> tuple[str, dict[str, Path]]:
    folders = {name: tmp_path / name for name in ("alpha", "beta")}
    for name, folder in folders.items():
        write(folder / "start.md", f"{name} first")
    config = instance("alpha", folders["alpha"], "alpha_rows") + instance(
        "beta", folders["beta"], "beta_rows"
    )
    return config, folders


def test_pause_stops_one_instance_the_other_stays_live_resume_catches_up_across_a_restart(
    tmp_path: Path, database_url: str
) -> None:
    sql = SqlHelper(database_url)
    config, folders = _two_instances(tmp_path)
    daemon = DaemonProcess(tmp_path, database_url, config).start()
    try:
        for name in folders:
            eventually(lambda n=name: status(daemon, n)["state"] == "WATCHING", f"{name} live")
        reply = command(daemon, "pause", name="alpha")
        assert reply["paused"] is True
        after = status(daemon, "alpha")
        assert (after["state"], after["paused"]) == ("PAUSED", True)
        assert status(daemon, "beta")["paused"] is False

        write(folders["alpha"] / "a.md", "alpha while paused")
        write(folders["beta"] / "b.md", "beta while alpha is paused")
        eventually(lambda: "beta while alpha is paused" in texts(sql, "beta_rows"), "beta live")
        # The watcher still collects alpha's hints; no pass writes them.
        eventually(lambda: status(daemon, "alpha")["pending_changes"] >= 1, "alpha's hint")
        time.sleep(1.0)
        assert "alpha while paused" not in texts(sql, "alpha_rows")
    finally:
        assert daemon.stop() == 0

    # Restarted, alpha is still paused: its catch-up pass waits, beta catches up and watches.
    write(folders["alpha"] / "c.md", "alpha while the daemon was down")
    daemon = DaemonProcess(tmp_path, database_url, config).start()
    try:
        eventually(lambda: status(daemon, "beta")["state"] == "WATCHING", "beta after restart")
        after = status(daemon, "alpha")
        assert (after["state"], after["paused"]) == ("PAUSED", True)
        write(folders["beta"] / "b2.md", "beta after the restart")
        eventually(lambda: "beta after the restart" in texts(sql, "beta_rows"), "beta live")
        time.sleep(1.0)
        assert texts(sql, "alpha_rows") == {"alpha first"}

        reply = command(daemon, "resume", name="alpha")
        assert reply["paused"] is False
        eventually(
            lambda: (
                texts(sql, "alpha_rows")
                == {"alpha first", "alpha while paused", "alpha while the daemon was down"}
            ),
            "alpha to catch up on resume",
        )
        eventually(lambda: status(daemon, "alpha")["state"] == "WATCHING", "alpha watching")
        assert status(daemon, "alpha")["paused"] is False
        write(folders["alpha"] / "d.md", "alpha live again")
        eventually(lambda: "alpha live again" in texts(sql, "alpha_rows"), "alpha live again")
    finally:
        assert daemon.stop() == 0
    # Resumed is persisted too: a third start does not come up paused.
    daemon = DaemonProcess(tmp_path, database_url, config).start()
    try:
        eventually(lambda: status(daemon, "alpha")["state"] == "WATCHING", "alpha after resume")
    finally:
        assert daemon.stop() == 0


def test_pause_interrupts_a_long_pass_and_resume_finishes_it(
    tmp_path: Path, database_url: str
) -> None:
    sql = SqlHelper(database_url)
    docs = tmp_path / "docs"
    write_files(docs, 120)
    config = flow_section("slow", docs, "slow_rows", "slow_factory")
    daemon = DaemonProcess(tmp_path, database_url, config).start()

    def count() -> int:
        try:
            return int(sql.fetchval("SELECT count(*) FROM slow_rows") or 0)
        except Exception:
            return 0

    try:
        eventually(lambda: count() >= 5, "the first pass to commit rows")
        command(daemon, "pause", name="slow")
        paused = status(daemon, "slow")
        assert paused["state"] == "PAUSED"
        assert paused["progress_line"] is None
        # The interrupted pass ends (embeddings under way finish first) and says so.
        eventually(lambda: status(daemon, "slow")["progress"]["finished"], "the pass to end")
        time.sleep(0.8)  # rows whose embedding was under way may still commit
        stopped_at = count()
        assert stopped_at < 120, "the pass finished before the pause could interrupt it"
        time.sleep(1.5)
        assert count() == stopped_at, "rows were written while paused"
        command(daemon, "resume", name="slow")
        eventually(lambda: count() == 120, "the pass to finish after resume", 60)
        eventually(lambda: status(daemon, "slow")["state"] == "WATCHING", "watching")
    finally:
        assert daemon.stop() == 0


def test_pause_of_unknown_or_on_demand_instances_is_refused(
    tmp_path: Path, database_url: str
) -> None:
    write(tmp_path / "docs" / "a.md", "text")
    config = instance("ondemand", tmp_path / "docs", "od_rows", live=False)
    daemon = DaemonProcess(tmp_path, database_url, config).start()
    try:
        reply = daemon.request("pause", name="nope")
        assert reply["ok"] is False and reply["error"]["code"] == "unknown_flow"
        reply = daemon.request("pause", name="ondemand")
        assert reply["ok"] is False and reply["error"]["code"] == "bad_args"
        assert "on-demand" in reply["error"]["message"]
    finally:
        assert daemon.stop() == 0
