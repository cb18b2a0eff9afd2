"""The figures that need the real daemon: `cocod status` latency and memory per instance.

Why the real daemon and the real CLI: what a person (or a prompt integration) waits for is
the whole `cocod status` process against a running `cocod serve`, and what a machine pays
is the daemon's resident memory with its instances live. Both start `cocod serve` on a
temporary config.toml whose instances use bench/daemon_flows.py, against the run's
Postgres (a database of its own per daemon start).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procmem import tree_rss_mb

REPO_ROOT = Path(__file__).resolve().parent.parent
COCOD = [str(Path(sys.executable).parent / "cocod")]


@dataclass
class Instance:
    name: str
    folder: Path
    table: str
    real_model: bool = False
    vector_index: bool = True


def _config(instances: list[Instance], db_url: str) -> str:
    lines = ["[database]", f"url = {json.dumps(db_url)}", ""]
    for i in instances:
        lines += [
            f"[flows.{i.name}]",
            'definition = "bench.daemon_flows:factory"',
            "live = true",
            f"[flows.{i.name}.params]",
            f"source_path = {json.dumps(str(i.folder))}",
            f"table = {json.dumps(i.table)}",
            f"real_model = {'true' if i.real_model else 'false'}",
            f"vector_index = {'true' if i.vector_index else 'false'}",
            "",
        ]
    return "\n".join(lines)


@contextmanager
def running_daemon(
    work: Path, instances: list[Instance], db_url: str, timeout: float = 300.0
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    """`cocod serve` with these live instances, once every one is WATCHING; stopped after."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.toml").write_text(_config(instances, db_url))
    env = {
        **os.environ,
        "COCOD_STATE_DIR": str(work / "state"),
        "COCOD_SOCKET": str(work / "cocod.sock"),
        "PYTHONPATH": str(REPO_ROOT),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env.pop("COCOD_DATABASE_URL", None)
    log = (work / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [*COCOD, "serve", "--config", str(work / "config.toml")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if daemon.poll() is not None:
                raise RuntimeError(f"cocod serve exited {daemon.returncode}; see {log.name}")
            res = subprocess.run([*COCOD, "ls", "--json"], env=env, capture_output=True)
            if res.returncode == 0:
                states = [r["state"] for r in json.loads(res.stdout)]
                if len(states) == len(instances) and all(s == "WATCHING" for s in states):
                    break
                if "FAILED" in states:
                    raise RuntimeError(f"an instance FAILED: {states}; see {log.name}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"instances not all WATCHING after {timeout:.0f} s")
            time.sleep(0.3)
        yield daemon, env
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()


def proc_memory_mb(pid: int) -> dict[str, float]:
    """The daemon's RSS with its descendants, and its own peak (VmHWM)."""
    out = {"rss_mb": tree_rss_mb(pid), "self_peak_rss_mb": 0.0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "VmHWM":
            out["self_peak_rss_mb"] = int(value.split()[0]) / 1024
    return out


def cli_latency_ms(env: dict[str, str], command: list[str], runs: int) -> dict[str, Any]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([*COCOD, *command], env=env, capture_output=True, check=True)
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p95_ms": samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))],
        "max_ms": samples[-1],
        "samples_ms": samples,
    }


async def _fill(db_url: str, tables: list[str], rows: int) -> None:
    """Add ``rows`` target rows in all, spread over ``tables``, bypassing the engine.

    Copies of one existing row with a new ``filename`` (part of the primary key), made by
    the server (INSERT … SELECT over generate_series): the figure is about what status
    costs on big tables, not about how the rows got there.
    """
    import asyncpg

    conn = await asyncpg.connect(db_url)
    try:
        per = rows // len(tables)
        for n, table in enumerate(tables):
            k = per + (rows - per * len(tables) if n == 0 else 0)
            cols = [
                r["column_name"]
                for r in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = $1 ORDER BY ordinal_position",
                    table,
                )
            ]
            exprs = ", ".join(
                f"'bulk/' || g || '/' || s.{c}" if c == "filename" else f"s.{c}" for c in cols
            )
            await conn.execute(
                f"INSERT INTO {table} ({', '.join(cols)}) SELECT {exprs} "
                f"FROM (SELECT * FROM {table} LIMIT 1) s, generate_series(1, {int(k)}) g"
            )
            await conn.execute(f"ANALYZE {table}")
    finally:
        await conn.close()


def _reported(env: dict[str, str]) -> dict[str, Any]:
    res = subprocess.run([*COCOD, "status", "--json"], env=env, capture_output=True)
    if res.returncode != 0:
        return {}
    return {r["name"]: r.get("targets") or {} for r in json.loads(res.stdout)}


def _wait_reported(env: dict[str, str], at_least: int, timeout: float) -> dict[str, Any]:
    """status's row counts, once each instance reports ``at_least`` rows (or at timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        reported = _reported(env)
        counts = [sum(int(v) for v in t.values()) for t in reported.values()]
        if (counts and min(counts) >= at_least) or time.monotonic() > deadline:
            return reported
        time.sleep(0.5)


def status_figure(
    work: Path, folders: list[Path], db_url: str, rows: int, runs: int
) -> dict[str, Any]:
    import asyncio

    instances = [
        Instance(f"status{i}", f, f"bench_status_{i}", vector_index=False)
        for i, f in enumerate(folders)
    ]
    with running_daemon(work, instances, db_url) as (_daemon, env):
        t0 = time.perf_counter()
        asyncio.run(_fill(db_url, [i.table for i in instances], rows))
        fill_s = time.perf_counter() - t0
        # The daemon counts rows when an instance updates: touch one file per folder so
        # each instance runs a pass and status is asked about the big tables.
        for i in instances:
            first = min(i.folder.rglob("*.md"))
            first.write_text(first.read_text() + "\n\nTouched by bench/run.py.\n")
        reported = _wait_reported(env, rows // len(instances), timeout=30.0)
        return {
            "reported_targets": reported,
            "instances": len(instances),
            "target_rows_added": rows,
            "fill_s": fill_s,
            "ping": cli_latency_ms(env, ["ping"], runs),
            "status": cli_latency_ms(env, ["status"], runs),
            "status_json": cli_latency_ms(env, ["status", "--json"], runs),
        }


def memory_figure(work: Path, folders: list[Path], db_url: str, settle_s: float) -> dict[str, Any]:
    instances = [
        Instance(f"mem{i}", f, f"bench_mem_{i}", real_model=True) for i, f in enumerate(folders)
    ]
    with running_daemon(work, instances, db_url) as (daemon, _env):
        time.sleep(settle_s)
        return {"instances": len(instances), **proc_memory_mb(daemon.pid)}


def proc_cpu_s(pid: int) -> float:
    """utime + stime of one process (its own threads, not its children), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_pids(data_dir: Path) -> list[int]:
    """The postmaster of ``data_dir`` and its backends (read from /proc, nothing killed)."""
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return []
    master = int(pid_file.read_text().split()[0])
    pids = [master]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == master:
                pids.append(int(entry.name))
    return pids


def _cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # a backend that ended meanwhile
            total += proc_cpu_s(pid)
    return total


def idle_figure(
    work: Path,
    folders: list[Path],
    db_url: str,
    idle_s: float,
    pg_data: Path | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    """CPU of an idle daemon with live instances over these folders, once WATCHING.

    The daemon's own CPU (utime + stime of its threads) and, when ``pg_data`` is given,
    the embedded Postgres server's (postmaster and backends: heartbeats and probes cost
    there too). ``profile``: a py-spy record of the idle window (``--idle`` samples, so
    what wakes the daemon shows beside where it sleeps).
    """
    instances = [Instance(f"idle{i}", f, f"bench_idle_{i}") for i, f in enumerate(folders)]
    with running_daemon(work, instances, db_url, timeout=3600.0) as (daemon, _env):
        time.sleep(2.0)
        pg_pids = postgres_pids(pg_data) if pg_data is not None else []
        spy = None
        if profile is not None:
            exe = str(Path(sys.executable).parent / "py-spy")
            record = ["record", "-p", str(daemon.pid), "-r", "100", "-d", str(int(idle_s))]
            spy = subprocess.Popen(
                [exe, *record, "-f", "raw", "-o", str(profile)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        c0, p0, t0 = proc_cpu_s(daemon.pid), _cpu_of(pg_pids), time.perf_counter()
        time.sleep(idle_s)
        wall = time.perf_counter() - t0
        out = {
            "instances": len(instances),
            "idle_s": wall,
            "daemon_cpu_pct": (proc_cpu_s(daemon.pid) - c0) / wall * 100,
            "postgres_cpu_pct": (_cpu_of(pg_pids) - p0) / wall * 100,
            "threads": len(list(Path(f"/proc/{daemon.pid}/task").iterdir())),
        }
        if spy is not None:
            spy.wait(timeout=idle_s + 30)
        return out


def main() -> int:
    """``python bench/daemon_figures.py idle --workdir W --files N [--instances K]``."""
    import argparse

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import corpus as corpus_mod
    from setup_db import BenchPostgres

    p = argparse.ArgumentParser(description="An idle daemon's CPU (issue 11, figure 3).")
    p.add_argument("figure", choices=["idle"])
    p.add_argument("--workdir", type=Path, required=True, help="kept: corpus, Postgres")
    p.add_argument("--files", type=int, default=1000, help="files per watched folder")
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--idle-s", type=float, default=60.0)
    p.add_argument("--profile", type=Path, help="py-spy raw stacks of the idle window")
    args = p.parse_args()
    work: Path = args.workdir
    folders = []
    for i in range(args.instances):
        folder = work / f"idle-corpus-{args.files}-{i}"
        if not folder.exists():
            corpus_mod.build_corpus(folder, args.files, seed=i)
        folders.append(folder)
    pg = BenchPostgres(work / "pg")
    try:
        db = f"idle_{args.files}_{args.instances}"
        if not (work / f"{db}.created").exists():
            pg.create_database(db)  # kept: the next run's catch-up is a no-op
            (work / f"{db}.created").write_text("ok")
        r = idle_figure(
            work / "daemon", folders, pg.url(db), args.idle_s, work / "pg" / "pgdata", args.profile
        )
    finally:
        pg.stop()
    print(
        f"idle daemon, {args.instances} instance(s) x {args.files:,} files, {r['idle_s']:.0f} s: "
        f"daemon {r['daemon_cpu_pct']:.2f} % CPU ({r['threads']} threads), "
        f"Postgres {r['postgres_cpu_pct']:.2f} %"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
