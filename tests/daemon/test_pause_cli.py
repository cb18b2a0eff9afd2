"""`cocod pause NAME` / `cocod resume NAME` through the real CLI: one instance stops
following its folder (across a daemon restart) while the other stays live."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SqlHelper, write
from tests.daemon.harness import DaemonProcess, eventually, instance


def texts(sql: SqlHelper, table: str) -> set[str]:
    return {r[0] for r in sql.fetch(f"SELECT text FROM {table}")}


def test_pause_and_resume_from_the_command_line(tmp_path: Path, database_url: str) -> None:
    sql = SqlHelper(database_url)
    write(tmp_path / "a" / "a.md", "alpha start")
    write(tmp_path / "b" / "b.md", "beta start")
    config = instance("alpha", tmp_path / "a", "pause_alpha") + instance(
        "beta", tmp_path / "b", "pause_beta"
    )
    daemon = DaemonProcess(tmp_path, database_url, config).start()
    try:
        for name in ("alpha", "beta"):
            eventually(lambda n=name: daemon.state(n) == "WATCHING", f"{name} to watch")
        paused = daemon.cli("pause", "alpha")
        assert paused.stdout.strip().startswith("alpha: paused"), paused.stdout
        (status,) = daemon.json("status", "alpha")
        assert status["paused"] is True and status["state"] == "PAUSED"
        # --json carries the numbers the metrics endpoint serves, with the process's.
        assert status["metrics"]["paused"] is True and status["metrics"]["state"] == "PAUSED"
        assert status["metrics"]["process"]["rss_bytes"] > 0
        table = daemon.cli("status").stdout
        assert next(line for line in table.splitlines() if line.startswith("alpha")).split()[1] == (
            "PAUSED"
        ), table

        write(tmp_path / "a" / "a2.md", "alpha while paused")
        write(tmp_path / "b" / "b2.md", "beta while alpha is paused")
        eventually(lambda: "beta while alpha is paused" in texts(sql, "pause_beta"), "beta live")
        assert "alpha while paused" not in texts(sql, "pause_alpha")

        daemon.stop()  # paused is kept across a restart
        write(tmp_path / "a" / "a3.md", "alpha while stopped")
        daemon.start()
        eventually(lambda: daemon.state("beta") == "WATCHING", "beta to watch again")
        (status,) = daemon.json("status", "alpha")
        assert status["paused"] is True
        assert not {"alpha while paused", "alpha while stopped"} & texts(sql, "pause_alpha")

        resumed = daemon.cli("resume", "alpha")
        assert resumed.stdout.strip().startswith("alpha: resumed"), resumed.stdout
        eventually(
            lambda: {"alpha while paused", "alpha while stopped"} <= texts(sql, "pause_alpha"),
            "alpha to catch up",
        )
        assert daemon.json("status", "alpha")[0]["paused"] is False

        unknown = daemon.cli("pause", "nope", check=False)
        assert unknown.returncode == 1 and "unknown_flow" in unknown.stderr
    finally:
        daemon.stop()
