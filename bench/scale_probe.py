"""cocod alone, fresh processes, one corpus size kept between runs: what grows with N.

Why beside run.py: finding what is O(corpus) in a one-file edit needs the same indexed
corpus measured (and profiled) many times; building and indexing 50,000 files takes
minutes, so this keeps the corpus, the Postgres data and the index in ``--workdir`` and
only re-indexes when they are missing. It is a tool for engineers, not a figure.

    .venv/bin/python bench/scale_probe.py --size 50000 --workdir /tmp/probe50k
    .venv/bin/python bench/scale_probe.py --size 50000 --workdir /tmp/probe50k \
        --steps edit --profile /tmp/edit.svg      # py-spy flame graph of one fresh edit

Each step (noop, edit, delete) runs ``bench/worker.py update`` in a fresh process, as
run.py does, and prints update() and setup() times and per-file cost. ``PYTHONPATH``
is passed on, so a snapshot of the tree (``git archive``) can be measured while the
checkout changes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus as corpus_mod
from setup_db import BenchPostgres

BENCH = Path(__file__).resolve().parent
WORKER = BENCH / "worker.py"


def server_cpu_s(pgdata: Path) -> float | None:
    """CPU seconds the embedded server has used so far: the postmaster, its exited
    children (reaped, so in its cutime/cstime) and its live ones; None when unreadable.

    Why: on a shared machine wall time mostly measures the neighbours, so each step also
    prints what it cost this process and the server in CPU (compare those run to run).
    """
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        hz = os.sysconf("SC_CLK_TCK")

        def fields(p: int | str) -> list[str]:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()

        total = sum(int(x) for x in fields(pid)[11:15])
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            try:
                f = fields(child)
            except OSError:
                continue  # exited meanwhile: counted in the postmaster's cutime
            total += int(f[11]) + int(f[12])
        return total / hz
    except (OSError, ValueError, IndexError):
        return None


def run_worker(
    pg: BenchPostgres, work: Path, size: int, extra: list[str], profile: str | None
) -> dict[str, object]:
    url = pg.url("probe")
    env = {**os.environ, "COCOD_DATABASE_URL": url, "COCOD_STATE_DIR": str(work / "state")}
    cmd = [sys.executable, str(WORKER), "update", "--engine", "cocod", "--db-url", url]
    cmd += ["--flow", f"Probe{size}", "--table", f"probe_{size}"]
    cmd += ["--source", str(work / "corpus"), *extra]
    if profile:
        spy = Path(sys.executable).parent / "py-spy"
        fmt = {".json": "speedscope", ".txt": "raw"}.get(Path(profile).suffix, "flamegraph")
        cmd = [
            str(spy),
            "record",
            "--nonblocking",
            "--subprocesses",
            "-r",
            os.environ.get("SPY_RATE", "500"),
            "-f",
            fmt,
            "-o",
            profile,
            "--",
            *cmd,
        ]
    pgdata = work / "pg" / "pgdata"
    s0 = server_cpu_s(pgdata)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    time.sleep(0.2)  # the backends' exit reaches the postmaster's accounts
    s1 = server_cpu_s(pgdata)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    if res.returncode != 0 or not lines:
        raise SystemExit(
            f"worker failed ({res.returncode}):\n{res.stdout[-3000:]}{res.stderr[-3000:]}"
        )
    out: dict[str, object] = json.loads(lines[-1][len("RESULT ") :])
    out["process_s"] = wall
    out["process_cpu_s"] = c1.ru_utime - c0.ru_utime + c1.ru_stime - c0.ru_stime
    out["server_cpu_s"] = s1 - s0 if s0 is not None and s1 is not None else None
    return out


def _ms(seconds: object) -> str:
    return "?" if seconds is None else f"{float(seconds) * 1000:.0f} ms"  # type: ignore[arg-type]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--steps", default="noop,edit,delete")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--profile", help="py-spy output of the first step (.svg, .json speedscope, .txt collapsed)"
    )
    p.add_argument("--reindex", action="store_true", help="rebuild the corpus and the index")
    args = p.parse_args()
    work: Path = args.workdir
    if args.reindex and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    pg = BenchPostgres(work / "pg")
    try:
        marker = work / "indexed"
        if not marker.exists():
            c = corpus_mod.build_corpus(work / "corpus", args.size)
            (work / "files.json").write_text(json.dumps(c.files))
            pg.create_database("probe")
            r = run_worker(pg, work, args.size, [], None)
            rate = int(r["rows"]) / float(r["update_s"])  # type: ignore[arg-type]
            print(
                f"initial index: {r['update_s']:.1f} s, {r['rows']:,} chunks, "
                f"{rate:,.0f} chunks/s, peak RSS {r['peak_rss_mb']:.0f} MB"
            )
            marker.write_text("ok")
        files = json.loads((work / "files.json").read_text())
        root = work / "corpus"
        pick = [f for f in files if (root / f).exists()]
        n = len(pick)
        profile = args.profile
        for step in args.steps.split(","):
            for i in range(args.repeats):
                rel = pick[(hash((step, i, time.time_ns())) % len(pick))]
                if step == "edit":
                    corpus_mod.edit_file(root / rel, f"probe{time.time_ns()}")
                elif step == "delete":
                    (root / rel).unlink()
                    pick.remove(rel)
                r = run_worker(pg, work, args.size, [], profile)
                profile = None
                ms = {
                    k: float(r[k]) * 1000 for k in ("update_s", "update_cpu_s", "setup_s", "open_s")
                }  # type: ignore[arg-type]
                print(
                    f"{step:<6} update {ms['update_s']:7.1f} ms "
                    f"({ms['update_s'] / n * 1000:.1f} µs/file, CPU {ms['update_cpu_s']:.0f} ms), "
                    f"setup {ms['setup_s']:6.1f} ms, open {ms['open_s']:6.1f} ms, "
                    f"process {r['process_s']:.2f} s (CPU {float(r['process_cpu_s']):.2f} s), "  # type: ignore[arg-type]
                    f"server CPU {_ms(r['server_cpu_s'])}, peak {r['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
                n = len(pick)
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
