"""`cocod serve` as a real subprocess, driven through the real CLI over the real socket."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SqlHelper, write
from tests.daemon.harness import DaemonProcess, eventually, instance


def texts(sql: SqlHelper, table: str) -> list[str]:
    try:
        return sorted(r[0] for r in sql.fetch(f"SELECT text FROM {table}"))
    except Exception:
        return []


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name in ("alpha", "beta", "gamma", "delta"):
        out[name] = tmp_path / name
        write(out[name] / "start.md", f"{name} first")
    return out


@pytest.fixture
def daemon(tmp_path: Path, database_url: str, folders: dict[str, Path]) -> Iterator[DaemonProcess]:
    config = (
        '[daemon]\nidle_ttl = "1s"\nmax_open_flows = 5\n\n'
        + instance("alpha", folders["alpha"], "alpha_rows")
        + instance("beta", folders["beta"], "beta_rows")
        + instance("ondemand", folders["gamma"], "gamma_rows", live=False)
    )
    process = DaemonProcess(tmp_path, database_url, config).start()
    yield process
    process.stop()


def test_live_instances_follow_edits_and_survive_close_open(
    daemon: DaemonProcess, database_url: str, folders: dict[str, Path]
) -> None:
    sql = SqlHelper(database_url)
    eventually(lambda: daemon.state("alpha") == "WATCHING", "alpha to watch")
    eventually(lambda: daemon.state("beta") == "WATCHING", "beta to watch")
    write(folders["alpha"] / "a.md", "alpha edit")
    write(folders["beta"] / "b.md", "beta edit")
    eventually(lambda: "alpha edit" in texts(sql, "alpha_rows"), "alpha's edit")
    eventually(lambda: "beta edit" in texts(sql, "beta_rows"), "beta's edit")

    daemon.cli("close", "alpha")
    assert daemon.state("alpha") == "STOPPED"
    write(folders["beta"] / "b2.md", "beta while alpha is closed")
    eventually(lambda: "beta while alpha is closed" in texts(sql, "beta_rows"), "beta live")
    write(folders["alpha"] / "a2.md", "alpha while closed")
    daemon.cli("open", "alpha")
    eventually(lambda: "alpha while closed" in texts(sql, "alpha_rows"), "alpha to catch up")

    listing = {r["name"]: r for r in daemon.json("ls")}
    assert listing["ondemand"]["live"] is False and listing["alpha"]["live"] is True
    # Row counts are refreshed in the background; status shows them with their age.
    (status,) = eventually(
        lambda: (s := daemon.json("status", "alpha"))[0].get("targets") == {"paragraphs": 3} and s,
        "alpha's row counts",
    )
    assert status["state"] == "WATCHING" and status["database"] == "up"
    assert status["targets_age_s"] >= 0


def test_on_demand_instance_opens_for_commands_and_closes_when_idle(
    daemon: DaemonProcess, database_url: str
) -> None:
    assert daemon.state("ondemand") == "STOPPED"
    daemon.cli("setup", "ondemand")
    result = daemon.json("update", "ondemand")
    assert result["stats"]["documents"]["num_insertions"] == 1
    assert daemon.state("ondemand") == "OPEN"
    assert SqlHelper(database_url).fetchval("SELECT count(*) FROM gamma_rows") == 1
    eventually(lambda: daemon.state("ondemand") == "STOPPED", "the idle TTL to close it", 10)


def test_added_instance_survives_a_restart(
    daemon: DaemonProcess, database_url: str, folders: dict[str, Path]
) -> None:
    daemon.cli(
        "add",
        "added",
        "tests.daemon.flows:dict_factory",
        "--param",
        f"source_path={folders['delta']}",
        "--param",
        "table=delta_rows",
    )
    sql = SqlHelper(database_url)
    eventually(lambda: texts(sql, "delta_rows") == ["delta first"], "the added instance")
    assert daemon.stop() == 0
    write(folders["delta"] / "later.md", "written while the daemon was down")
    daemon.start()
    assert "added" in {r["name"] for r in daemon.json("ls")}
    eventually(lambda: "written while the daemon was down" in texts(sql, "delta_rows"), "catch-up")
    duplicate = daemon.cli("add", "added", "tests.daemon.flows:factory", check=False)
    assert duplicate.returncode == 1 and "flow_exists" in duplicate.stderr
    daemon.cli("remove", "added", "--drop")
    assert "added" not in {r["name"] for r in daemon.json("ls")}
    assert sql.fetchval("SELECT to_regclass('delta_rows')") is None


def test_sighup_applies_config_changes(
    daemon: DaemonProcess, database_url: str, folders: dict[str, Path]
) -> None:
    eventually(lambda: daemon.state("alpha") == "WATCHING", "alpha to watch")
    eventually(lambda: daemon.state("beta") == "WATCHING", "beta to watch")
    # alpha unchanged, beta removed, delta added, ondemand changed.
    daemon.config.write_text(
        '[daemon]\nidle_ttl = "1s"\n\n'
        + instance("alpha", folders["alpha"], "alpha_rows")
        + instance("delta", folders["delta"], "delta_rows")
        + instance("ondemand", folders["gamma"], "gamma_rows_v2", live=False)
    )
    daemon.signal(signal.SIGHUP)
    names = eventually(
        lambda: (
            (n := {r["name"] for r in daemon.json("ls")}) == {"alpha", "delta", "ondemand"} and n
        ),
        "the reload",
    )
    assert names == {"alpha", "delta", "ondemand"}
    assert daemon.state("alpha") == "WATCHING", "an unchanged instance is not restarted"
    sql = SqlHelper(database_url)
    eventually(lambda: texts(sql, "delta_rows") == ["delta first"], "the added instance")
    write(folders["beta"] / "ignored.md", "beta is gone")
    write(folders["alpha"] / "kept.md", "alpha still live")
    eventually(lambda: "alpha still live" in texts(sql, "alpha_rows"), "alpha")
    assert "beta is gone" not in texts(sql, "beta_rows")


def test_broken_definition_backs_off_while_others_index(
    tmp_path: Path, database_url: str, folders: dict[str, Path]
) -> None:
    config = instance("good", folders["alpha"], "good_rows") + instance(
        "broken", folders["beta"], "broken_rows", fail=True
    )
    process = DaemonProcess(tmp_path, database_url, config).start()
    try:
        sql = SqlHelper(database_url)
        eventually(lambda: process.state("broken") in ("BACKOFF", "FAILED"), "the broken one")
        (status,) = process.json("status", "broken")
        assert "broken on purpose" in status["last_error"]
        write(folders["alpha"] / "x.md", "good keeps indexing")
        eventually(lambda: "good keeps indexing" in texts(sql, "good_rows"), "the good one")
        assert process.state("good") == "WATCHING"
    finally:
        assert process.stop() == 0


def test_sigterm_drains_and_exits_zero(
    daemon: DaemonProcess, database_url: str, folders: dict[str, Path]
) -> None:
    sql = SqlHelper(database_url)
    eventually(lambda: daemon.state("alpha") == "WATCHING", "alpha to watch")
    for i in range(150):
        write(folders["alpha"] / "burst" / f"f{i}.md", f"burst {i}\n\nsecond {i}")
    time.sleep(0.2)  # stop in the middle of processing the burst
    started = time.monotonic()
    assert daemon.stop(timeout=30) == 0
    assert time.monotonic() - started < 25
    # No half-written row: every tracked file has exactly its paragraphs in the table.
    rows = sql.fetch("SELECT filename, text FROM alpha_rows")
    by_file: dict[str, set[str]] = {}
    for r in rows:
        by_file.setdefault(r["filename"], set()).add(r["text"])
    for filename, paragraphs in by_file.items():
        if filename.startswith("burst/"):
            i = filename.removeprefix("burst/f").removesuffix(".md")
            assert paragraphs == {f"burst {i}", f"second {i}"}, filename
    tracked = sql.fetchval("SELECT count(*) FROM cocod.tracking WHERE source_key LIKE 'burst/%'")
    assert tracked == sum(1 for f in by_file if f.startswith("burst/"))
    # After a restart the rest of the burst is indexed.
    daemon.start()
    eventually(
        lambda: (
            sql.fetchval("SELECT count(*) FROM alpha_rows WHERE filename LIKE 'burst/%'") == 300
        ),
        "the rest of the burst",
    )
