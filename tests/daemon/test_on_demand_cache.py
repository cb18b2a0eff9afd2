"""On-demand instances are held by one ``cocod.FlowInstances`` in the real daemon.

Concurrent commands on a cold instance share one open (the daemon's former cache opened it
once per racing command and all but one failed with "already exists"); an instance idle
past ``idle_ttl`` is closed and reopens on the next command; past ``max_open_flows`` the
least recently used instance that no command is using is closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cocod as cocoindex
from tests.conftest import SqlHelper, write
from tests.daemon.harness import DaemonProcess, eventually, instance

GATE_TIMEOUT_S = 60.0


@cocoindex.op.function()
def wait_for_gate(content: str, gate: str) -> str:
    """Holds an update open until the test creates ``gate`` (bounded: never hangs a run).

    Runs in the daemon (a sync function: in a worker thread), so it polls the file system.
    """
    Path(gate + ".entered").touch()
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return content


@dataclass
class GatedParams:
    source_path: str
    table: str
    gate: str


def gated_factory(
    params: GatedParams,
) -> Callable[[cocoindex.FlowBuilder, cocoindex.DataScope], None]:
    """A flow whose update waits at ``params.gate`` (named in the config of the test below)."""

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["files"] = fb.add_source(cocoindex.sources.LocalFile(path=params.source_path))
        out = scope.add_collector()
        with scope["files"].row() as f:
            f["held"] = f["content"].transform(wait_for_gate, gate=params.gate)
            out.collect(filename=f["filename"], held=f["held"])
        out.export(
            "rows",
            cocoindex.targets.Postgres(table_name=params.table),
            primary_key_fields=["filename"],
        )

    return define


def _on_demand(name: str, folder: Path, table: str) -> str:
    return instance(name, folder, table, live=False)


def test_racing_commands_on_a_cold_instance_open_it_once(tmp_path: Path, database_url: str) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "first paragraph\n\nsecond paragraph")
    daemon = DaemonProcess(tmp_path, database_url, _on_demand("cold", docs, "cold_rows")).start()
    try:
        assert daemon.state("cold") == "STOPPED"

        def command(i: int) -> dict[str, Any]:
            if i % 2:
                return daemon.request("query", name="cold", text="first", top=2, timeout=120)
            return daemon.request("update", name="cold", timeout=120)

        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(command, range(8)))
        assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]]
        assert len(daemon.log_events("instance.opened", "cold")) == 1, "opened exactly once"
        assert daemon.state("cold") == "OPEN"
        assert SqlHelper(database_url).fetchval("SELECT count(*) FROM cold_rows") == 2
    finally:
        assert daemon.stop() == 0


def test_an_idle_instance_is_closed_and_reopens_on_the_next_command(
    tmp_path: Path, database_url: str
) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "one")
    config = '[daemon]\nidle_ttl = "1s"\n\n' + _on_demand("idle", docs, "idle_rows")
    daemon = DaemonProcess(tmp_path, database_url, config).start()
    try:
        assert daemon.request("update", name="idle", timeout=60)["ok"]
        assert daemon.state("idle") == "OPEN"
        eventually(lambda: daemon.state("idle") == "STOPPED", "the idle TTL to close it", 15)
        assert len(daemon.log_events("instance.idle_closed", "idle")) == 1

        write(docs / "b.md", "two")
        reply = daemon.request("update", name="idle", timeout=60)
        assert reply["ok"] and reply["result"]["stats"]["documents"]["num_insertions"] == 1, reply
        assert daemon.state("idle") == "OPEN"
        assert len(daemon.log_events("instance.opened", "idle")) == 2
    finally:
        assert daemon.stop() == 0


def test_past_max_open_flows_the_least_recently_used_idle_instance_is_closed(
    tmp_path: Path, database_url: str
) -> None:
    for name in ("held", "b", "c"):
        write(tmp_path / name / "a.md", f"{name} text")
    gate = tmp_path / "gate"
    held = (
        '[flows.held]\ndefinition = "tests.daemon.test_on_demand_cache:gated_factory"\n'
        f'live = false\n[flows.held.params]\nsource_path = "{tmp_path / "held"}"\n'
        f'table = "held_rows"\ngate = "{gate}"\n'
    )
    config = (
        '[daemon]\nidle_ttl = "10m"\nmax_open_flows = 2\n\n'
        + held
        + _on_demand("b", tmp_path / "b", "b_rows")
        + _on_demand("c", tmp_path / "c", "c_rows")
    )
    daemon = DaemonProcess(tmp_path, database_url, config).start()
    try:
        with ThreadPoolExecutor(1) as pool:
            held_update = pool.submit(daemon.request, "update", name="held", timeout=120)
            eventually(lambda: Path(f"{gate}.entered").exists(), "held's update to start", 60)
            # held (opened first, so least recently used) is in use: b is the one to close.
            assert daemon.request("update", name="b", timeout=60)["ok"]
            assert daemon.request("update", name="c", timeout=60)["ok"]
            states = {n: daemon.state(n) for n in ("held", "b", "c")}
            assert states == {"held": "OPEN", "b": "STOPPED", "c": "OPEN"}, states
            assert [e["reason"] for e in daemon.log_events("instance.evicted", "b")] == [
                "max_open_flows"
            ]
            assert not daemon.log_events("instance.evicted", "held")
            gate.touch()
            assert held_update.result(timeout=120)["ok"]
        # held's update ended after c's: c is now the least recently used.
        assert daemon.request("update", name="b", timeout=60)["ok"]
        states = {n: daemon.state(n) for n in ("held", "b", "c")}
        assert states == {"held": "OPEN", "b": "OPEN", "c": "STOPPED"}, states
        assert SqlHelper(database_url).fetchval("SELECT count(*) FROM held_rows") == 1
    finally:
        gate.touch()
        assert daemon.stop() == 0


def test_an_instance_replaced_by_a_reload_while_an_update_runs(
    tmp_path: Path, database_url: str
) -> None:
    """The running update finishes on the old flow; a command sent meanwhile waits for it,
    then opens the new params' flow; the old flow is closed (it failed every retry with
    "was replaced" and stayed open while commands kept coming)."""
    write(tmp_path / "held" / "a.md", "held text")
    gate = tmp_path / "gate"

    def config(table: str) -> str:
        return (
            '[flows.held]\ndefinition = "tests.daemon.test_on_demand_cache:gated_factory"\n'
            f'live = false\n[flows.held.params]\nsource_path = "{tmp_path / "held"}"\n'
            f'table = "{table}"\ngate = "{gate}"\n'
        )

    daemon = DaemonProcess(tmp_path, database_url, config("held_rows")).start()
    sql = SqlHelper(database_url)
    try:
        with ThreadPoolExecutor(2) as pool:
            old_update = pool.submit(daemon.request, "update", name="held", timeout=120)
            eventually(lambda: Path(f"{gate}.entered").exists(), "the old update to start", 120)
            daemon.config.write_text(config("held_rows_v2"))
            reload = daemon.request("reload", timeout=60)
            assert reload["ok"] and reload["result"]["changed"] == ["held"], reload
            logged = len(daemon.logs())
            new_update = pool.submit(daemon.request, "update", name="held", timeout=120)
            eventually(
                lambda: (
                    new_update.done()
                    or "instance.waiting_for_previous_flow" in daemon.logs()[logged:]
                ),
                "the new update to wait for the old flow",
                60,
            )
            assert not new_update.done(), new_update.result()
            gate.touch()
            assert old_update.result(timeout=120)["ok"]
            reply = new_update.result(timeout=120)
            assert reply["ok"], reply
        # The new flow's setup moved the target: the old table went, the new one is full.
        assert sql.fetchval("SELECT to_regclass('held_rows') IS NULL") is True
        assert sql.fetchval("SELECT count(*) FROM held_rows_v2") == 1
        assert len(daemon.log_events("instance.opened", "held")) == 2
        assert len(daemon.log_events("instance.closed", "held")) == 1, "the old flow closed"
        assert daemon.state("held") == "OPEN"
        write(tmp_path / "held" / "b.md", "later text")
        assert daemon.request("update", name="held", timeout=60)["ok"]
        assert sql.fetchval("SELECT count(*) FROM held_rows_v2") == 2
        assert len(daemon.log_events("instance.opened", "held")) == 2
    finally:
        gate.touch()
        assert daemon.stop() == 0
