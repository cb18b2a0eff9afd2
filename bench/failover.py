"""Failover and rebalance times of daemons sharing one PostgreSQL.

Three real ``cocod serve`` processes (``--daemons``) share an embedded PostgreSQL and own
``--instances`` live instances between them. Each round SIGKILLs the owner of one
instance and times, from the kill:

* **failover**: until a survivor runs that instance again (WATCHING, caught up);

then starts a replacement daemon and times, from the moment it answers:

* **rebalance**: until every instance has one owner and every daemon its fair share
  (the owners hand instances over between passes).

Before each kill it also times ``update NAME`` (nothing to do but the pass itself) sent to
the owner and sent to a standby, which forwards it to the owner through the database
(:mod:`cocod.daemon.forwarding`): the difference is what forwarding costs.

Prints p50 and max of both over ``--kills`` rounds (20 by default; each round costs a
daemon start-up, so use ``--kills 3`` for a quick look)::

    .venv/bin/python bench/failover.py --kills 20 --lease-timeout 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.setup_db import BenchPostgres  # noqa: E402
from tests.daemon.harness import eventually  # noqa: E402
from tests.daemon.harness_cluster import (  # noqa: E402
    Member,
    cluster_config,
    each_owned_once,
    spawn_member,
    stop_all,
    wait_answering,
)


def _balanced(members: list[Member], names: list[str]) -> bool:
    owners = each_owned_once(members, names)
    if owners is None:
        return False
    live = [m for m in members if m.is_running]
    counts = [list(owners.values()).count(m.pid) for m in live]
    return max(counts) <= -(-len(names) // len(live)) and min(counts) >= len(names) // len(live)


def _runs_watching(members: list[Member], name: str) -> bool:
    for member in members:
        if member.is_running and member.statuses().get(name, {}).get("state") == "WATCHING":
            return True
    return False


def _timed_update(member: Member, name: str) -> float:
    started = time.monotonic()
    reply = member.process.request("update", timeout=60.0, name=name)
    assert reply["ok"], reply
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--instances", type=int, default=6)
    parser.add_argument("--lease-timeout", type=float, default=3.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cocod-failover-") as tmp:
        root = Path(tmp)
        pg = BenchPostgres(root / "pg")
        members: list[Member] = []
        try:
            pg.create_database("failover")
            url = pg.url("failover")
            flows = []
            for i in range(args.instances):
                folder = root / f"src{i}"
                folder.mkdir()
                for j in range(5):
                    (folder / f"doc{j}.md").write_text(f"paragraph {i} {j}\n\nanother {j}")
                flows.append((f"i{i}", folder, f"failover_t{i}"))
            names = [n for n, _, _ in flows]
            config = cluster_config(flows, lease_timeout=args.lease_timeout)
            members = [spawn_member(root, k, url, config) for k in range(args.daemons)]
            wait_answering(members)
            eventually(lambda: _balanced(members, names), "balanced owners", 120)
            failovers: list[float] = []
            rebalances: list[float] = []
            direct: list[float] = []
            forwarded: list[float] = []
            for round_no in range(args.kills):
                owners = each_owned_once(members, names)
                assert owners is not None
                name = names[round_no % len(names)]
                victim = next(m for m in members if m.is_running and m.pid == owners[name])
                standby = next(m for m in members if m.is_running and m is not victim)
                direct.append(_timed_update(victim, name))
                forwarded.append(_timed_update(standby, name))
                victim.kill()
                killed = time.monotonic()
                eventually(lambda n=name: _runs_watching(members, n), "failover", 120)  # type: ignore[misc]
                failovers.append(time.monotonic() - killed)
                newcomer = spawn_member(root, args.daemons + round_no, url, config)
                members.append(newcomer)
                wait_answering([newcomer])
                joined = time.monotonic()
                eventually(lambda: _balanced(members, names), "rebalance", 120)
                rebalances.append(time.monotonic() - joined)
                print(
                    f"round {round_no + 1}/{args.kills}: failover {failovers[-1]:.2f} s, "
                    f"rebalance {rebalances[-1]:.2f} s",
                    flush=True,
                )
        finally:
            stop_all(members)
            pg.stop()

    def line(label: str, values: list[float]) -> str:
        return f"{label}: p50 {statistics.median(values):.2f} s, max {max(values):.2f} s"

    print(
        f"lease_timeout {args.lease_timeout:g} s, {args.daemons} daemons, "
        f"{args.instances} instances, {args.kills} kills"
    )
    print(line("failover (SIGKILL of the owner -> a survivor WATCHING)", failovers))
    print(line("rebalance (a daemon joins -> fair shares)", rebalances))
    print(line("update sent to the owner", direct))
    print(line("update sent to a standby (forwarded to the owner)", forwarded))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
