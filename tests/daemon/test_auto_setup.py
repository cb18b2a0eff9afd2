"""On-demand instances are set up when the daemon opens them (as v0's examples do with
``open_flow`` then ``setup()``): ``cocod update NAME`` works on one that was never set up;
``auto_setup = false`` keeps the explicit ``cocod setup`` step."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SqlHelper, write
from tests.daemon.harness import DaemonProcess, instance


def test_update_of_a_never_set_up_on_demand_instance_sets_it_up_unless_told_not_to(
    tmp_path: Path, database_url: str
) -> None:
    sql = SqlHelper(database_url)
    docs = tmp_path / "docs"
    write(docs / "a.md", "one paragraph\n\nanother paragraph")
    config = instance("auto", docs, "auto_rows", live=False) + instance(
        "manual", docs, "manual_rows", live=False
    ).replace("live = false\n", "live = false\nauto_setup = false\n")
    daemon = DaemonProcess(tmp_path, database_url, config).start()
    try:
        reply = daemon.request("update", name="auto", timeout=60)
        assert reply["ok"], reply
        assert sql.fetchval("SELECT count(*) FROM auto_rows") == 2

        reply = daemon.request("update", name="manual", timeout=60)
        assert reply["ok"] is False
        assert reply["error"]["code"] == "setup_required", reply
        assert sql.fetchval("SELECT to_regclass('manual_rows')") is None
        reply = daemon.request("setup", name="manual", timeout=60)
        assert reply["ok"], reply
        reply = daemon.request("update", name="manual", timeout=60)
        assert reply["ok"], reply
        assert sql.fetchval("SELECT count(*) FROM manual_rows") == 2
    finally:
        assert daemon.stop() == 0
    assert "metrics.listening" not in daemon.logs()  # metrics are off unless configured
