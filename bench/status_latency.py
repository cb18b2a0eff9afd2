"""How fast the CLI answers: `cocod ping`, `status` and `ls` against an idle daemon.

Why whole processes: what a person (or a shell prompt integration) waits for is the whole
`cocod status` process, start-up and imports included, so the figure is wall time of the
real console script run as a subprocess, next to the floor no Python CLI can beat on this
machine (`python -c pass`, `python -S -c pass`, `python -c 'import socket, json'`). The
commands are run alternately, one sample of each per round, so a machine whose load drifts
(2 shared cores) shifts every row alike; the child's CPU time (user + sys, from wait4) is
printed too, as it is far less sensitive to other processes than wall time.

It starts `cocod serve` on a temporary config with --instances live instances (small
folders, the run's own embedded Postgres), waits until all are watching, optionally adds
--rows target rows spread over their tables (issue 11 asks for 1,000,000) and lets each
instance run a pass so status reports them, then measures.

Run: .venv/bin/python bench/status_latency.py [--instances 5] [--runs 30] [--rows 1000000]
     [--no-floor] [--serve]   (--serve: keep the daemon up and print its socket, for -X
     importtime or perf experiments by hand; Ctrl+C or SIGTERM stops it)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_figures import Instance, _fill, _wait_reported, running_daemon
from setup_db import BenchPostgres

PYTHON = sys.executable
COCOD = str(Path(sys.executable).parent / "cocod")
FLOOR = {
    "python -c pass": [PYTHON, "-c", "pass"],
    "python -S -c pass": [PYTHON, "-S", "-c", "pass"],
    "python -c 'import socket, json'": [PYTHON, "-c", "import socket, json"],
}
CLI = {
    "cocod ping": [COCOD, "ping"],
    "cocod status": [COCOD, "status"],
    "cocod status --json": [COCOD, "status", "--json"],
    "cocod ls": [COCOD, "ls"],
}


def run_once(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, child CPU ms) of one run; fails loudly if the command fails."""
    start = time.perf_counter()
    child = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=env["HOME"]
    )
    assert child.stderr is not None
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = (time.perf_counter() - start) * 1000
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{shlex.join(command)} failed ({child.returncode}): {err.decode()}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def measure(commands: dict[str, list[str]], env: dict[str, str], runs: int) -> None:
    """Alternate the commands run by run; print p50/p95/min of wall and CPU time."""
    wall: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for command in commands.values():  # one warm-up each: page cache, .pyc files
        run_once(command, env)
    for _ in range(runs):
        for name, command in commands.items():
            w, c = run_once(command, env)
            wall[name].append(w)
            cpu[name].append(c)
    print(f"{'command':<34} {'wall p50':>9} {'p95':>7} {'min':>7}   {'cpu p50':>8} {'min':>7}")
    for name in commands:
        w, c = sorted(wall[name]), sorted(cpu[name])
        p95 = w[min(len(w) - 1, round(0.95 * (len(w) - 1)))]
        print(
            f"{name:<34} {statistics.median(w):7.1f}ms {p95:5.1f}ms {w[0]:5.1f}ms"
            f"   {statistics.median(c):6.1f}ms {c[0]:5.1f}ms"
        )
    print(f"(n={runs} each, alternating; load {os.getloadavg()[0]:.2f})")


def _interrupted(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl+C, so the daemon and Postgres are stopped by the ``finally`` blocks
    (a background job ignores SIGINT)."""
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupted)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rows", type=int, default=0, help="target rows to add (in all)")
    parser.add_argument("--no-floor", action="store_true", help="skip the python floor rows")
    parser.add_argument("--serve", action="store_true", help="keep the daemon up; no figures")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cocod-status-bench-"))
    pg = BenchPostgres(work / "pg")
    try:
        pg.create_database("status_bench")
        db_url = pg.url("status_bench")
        instances = []
        for i in range(args.instances):
            folder = work / f"docs{i}"
            folder.mkdir()
            for j in range(20):
                (folder / f"f{j}.md").write_text(f"document {j} of folder {i}\n\nparagraph two")
            instances.append(Instance(f"i{i}", folder, f"bench_rows_{i}", vector_index=False))
        with running_daemon(work / "daemon", instances, db_url) as (_daemon, env):
            env["HOME"] = str(work)  # no .env above the working folder changes the figure
            # As installed: compiled modules are read from .pyc files (an environment that
            # forbids writing them would make every run compile cocod's sources again).
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            if args.rows:
                asyncio.run(_fill(db_url, [i.table for i in instances], args.rows))
                for i in instances:  # one pass each, so status reports the new counts
                    first = min(i.folder.glob("*.md"))
                    first.write_text(first.read_text() + "\n\ntouched\n")
                reported = _wait_reported(env, args.rows // len(instances), timeout=60.0)
                total = sum(int(v) for t in reported.values() for v in t.values())
                print(f"status reports {total:,} target rows over {len(reported)} instances")
            if args.serve:
                print(f"COCOD_SOCKET={env['COCOD_SOCKET']}  (Ctrl+C stops the daemon)")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    return
            time.sleep(1.0)
            print(f"daemon idle with {args.instances} live instances")
            measure({**({} if args.no_floor else FLOOR), **CLI}, env, args.runs)
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
