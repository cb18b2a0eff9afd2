"""How right is the ETA `cocod status` shows during a first index? (issue 13)

Run: ``nice -n 10 .venv/bin/python bench/progress_eta.py [--files 10000]``
(``--files 300`` is a smoke run of a minute or two).

What it does, as a user would: builds a code repository of ``--files`` source files (a git
working tree with a ``.gitignore``, bench/corpus.py ``build_code_repo``), starts the real
``cocod serve`` on the embedded Postgres, runs ``cocod add repo --path DIR --flow code``
(the built-in code flow with the real all-MiniLM-L6-v2 model, offline) and asks the
control socket for ``status`` every ``--interval`` seconds until the first pass is done.
Each sample keeps files done / total, chunks and the ETA status reported. At the first
sample at or past 10%, 50% and 90% of the files, the predicted finish (sample time +
ETA) is compared with the actual finish (the first sample whose pass is finished): the
error in seconds and in percent of the time that was really left.

Why sample the socket rather than a progress callback: the figure is about what a user
reads in ``cocod status`` (the daemon's estimator, in cocod/engine/progress.py), with the
daemon's model load, listing and commit pipeline all in the clock. The same samples are
also replayed through two simple estimators (the whole-pass rate, and the rate since the
first file finished), so a change of estimator can be judged on one run.

Output: a table on stdout and ``bench/results/<date>-<cores>c/progress_eta.json``
(``progress_eta_<N>files.json`` for another ``--files``), every sample included.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import build_code_repo, code_bases
from procmem import tree_cpu_s, tree_rss_mb
from setup_db import BenchPostgres

from cocod.control.client import ControlClient, DaemonError, DaemonUnavailableError
from cocod.engine.progress import PassProgress

BENCH = Path(__file__).resolve().parent
COCOD = [sys.executable, "-m", "cocod.cli.main"]
INSTANCE = "repo"
MILESTONES = (0.1, 0.5, 0.9)
Sample = dict[str, Any]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--files", type=int, default=10_000, help="source files (default 10,000)")
    p.add_argument("--seed", type=int, default=0, help="per-copy edits")
    p.add_argument(
        "--edit",
        choices=("header", "shift"),
        default="header",
        help="per-copy edit (bench/corpus.py build_code_repo): header, one new chunk per "
        "copy; shift, blank lines that move every row but no chunk text",
    )
    p.add_argument("--bases", type=int, default=0, help="source files replicated (0: all)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between status calls")
    p.add_argument("--timeout", type=float, default=5400.0, help="give up after (s)")
    p.add_argument("--out", type=Path, help="JSON file (default under bench/results/)")
    p.add_argument("--workdir", type=Path, help="parent of the temporary folder")
    p.add_argument(
        "--replay",
        type=Path,
        help="run nothing: recompute the milestones of a saved JSON (with this tree's "
        "estimator replayed on its samples) and print its table",
    )
    return p.parse_args(argv)


def default_out(files: int) -> Path:
    day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    name = "progress_eta.json" if files == 10_000 else f"progress_eta_{files}files.json"
    return BENCH / "results" / f"{day}-{os.cpu_count()}c" / name


class Daemon:
    """``cocod serve`` with no instances, on the run's Postgres; stopped with a deadline."""

    def __init__(self, work: Path, db_url: str) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.socket = work / "cocod.sock"
        (work / "config.toml").write_text(f"[database]\nurl = {json.dumps(db_url)}\n")
        self.env = {
            **os.environ,
            "COCOD_STATE_DIR": str(work / "state"),
            "COCOD_SOCKET": str(self.socket),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
        self.env.pop("COCOD_DATABASE_URL", None)
        self.log_path = work / "daemon.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*COCOD, "serve", "--config", str(work / "config.toml")],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        self.client = ControlClient(self.socket, timeout=30)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cocod serve exited {self.proc.returncode}; {self.log_path}")
            try:
                self.client.call("ping")
                return
            except DaemonUnavailableError:
                if time.monotonic() > deadline:
                    raise RuntimeError("cocod serve did not answer ping in 120 s") from None
                time.sleep(0.2)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COCOD, *args, "--socket", str(self.socket)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


def sample_until_done(daemon: Daemon, t0: float, interval: float, timeout: float) -> list[Sample]:
    """``status`` every ``interval`` s from ``t0`` until the first pass has finished."""
    samples: list[Sample] = []
    next_at = time.monotonic()
    while True:
        now = time.monotonic()
        if now - t0 > timeout:
            raise RuntimeError(f"the first index did not finish in {timeout:.0f} s")
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"cocod serve exited {daemon.proc.returncode}; {daemon.log_path}")
        try:
            row = daemon.client.call("status", {"name": INSTANCE})[0]
        except (DaemonError, DaemonUnavailableError) as e:
            row = {"state": f"status failed: {e}"}
        t = time.monotonic() - t0
        prog = row.get("progress") or {}
        s: Sample = {"t": round(t, 3), "state": row.get("state")}
        for key in ("listed", "candidates", "processed", "chunks", "rate", "eta_s", "finished"):
            s[key] = prog.get(key)
        s["line"] = row.get("progress_line")
        if len(samples) % 10 == 0:
            s["rss_mb"] = round(tree_rss_mb(daemon.proc.pid), 1)
        samples.append(s)
        if len(samples) % 30 == 0 or s["finished"]:
            done, total = s["processed"], s["candidates"]
            print(f"  {t:7.1f} s  {row.get('state')}  {done} / {total}  {s['line']}", flush=True)
        if s["finished"] and s["candidates"] is not None and s["processed"] == s["candidates"]:
            return samples
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))


def whole_pass_eta(history: list[Sample], s: Sample) -> float | None:
    """Rate since the first sample that had a pass (about the pass's start)."""
    first = next(h for h in history if h["candidates"] is not None or h["listed"] is not None)
    return _eta(s, s["processed"], s["t"] - first["t"])


def since_first_file_eta(history: list[Sample], s: Sample) -> float | None:
    """Rate since the first sample with a finished file (leaves out model load, listing)."""
    first = next((h for h in history if (h["processed"] or 0) > 0), None)
    if first is None or first is s:
        return None
    return _eta(s, s["processed"] - first["processed"], s["t"] - first["t"])


def _eta(s: Sample, done: int, elapsed: float) -> float | None:
    if done <= 0 or elapsed <= 0 or s["candidates"] is None:
        return None
    return (s["candidates"] - s["processed"]) / (done / elapsed)


def cocod_estimator_eta(history: list[Sample], s: Sample) -> float | None:
    """cocod's estimator as it is in this tree (cocod/engine/progress.py), replayed on the
    samples: what ``status`` would have shown, whichever tree the daemon ran."""
    first = next(h for h in history if h["candidates"] is not None or h["listed"] is not None)
    progress = PassProgress("replay", started_at=first["t"], candidates=s["candidates"])
    for h in history:
        progress.processed = h["processed"] or 0
        progress.note(now=h["t"])
    return progress.eta_s(now=s["t"])


ESTIMATORS: dict[str, Callable[[list[Sample], Sample], float | None]] = {
    "whole_pass_rate": whole_pass_eta,
    "rate_since_first_file": since_first_file_eta,
    "cocod_estimator_replayed": cocod_estimator_eta,
}


def milestones(samples: list[Sample]) -> list[dict[str, Any]]:
    """At the first sample at or past each milestone: predicted vs actual finish."""
    finish = next(s["t"] for s in samples if s["finished"])
    out = []
    for frac in MILESTONES:
        at = next(
            (
                (i, s)
                for i, s in enumerate(samples)
                if s["candidates"]
                and not s["finished"]
                and s["processed"] >= frac * s["candidates"]
            ),
            None,
        )
        if at is None:
            out.append({"fraction": frac, "sample": None})
            continue
        i, s = at
        left = finish - s["t"]
        row: dict[str, Any] = {
            "fraction": frac,
            "t_s": s["t"],
            "processed": s["processed"],
            "actual_left_s": round(left, 1),
        }
        etas = {"status": s["eta_s"]}
        etas.update({name: f(samples[: i + 1], s) for name, f in ESTIMATORS.items()})
        for name, eta in etas.items():
            err = None if eta is None else eta - left
            row[name] = {
                "eta_s": None if eta is None else round(eta, 1),
                "error_s": None if err is None else round(err, 1),
                "error_pct": None if err is None or left <= 0 else round(100 * err / left, 1),
            }
        out.append(row)
    return out


def count_rows(db_url: str, table: str) -> int:
    import asyncio

    import asyncpg

    async def run() -> int:
        conn = await asyncpg.connect(db_url)
        try:
            return int(await conn.fetchval(f'SELECT count(*) FROM "{table}"'))
        finally:
            await conn.close()

    return asyncio.run(run())


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="cocod-eta-", dir=args.workdir))
    pg = BenchPostgres(work / "pg")
    daemon: Daemon | None = None
    try:
        origin, _bases = code_bases()
        t_build = time.perf_counter()
        repo = build_code_repo(
            work / "repo", args.files, seed=args.seed, edit=args.edit, max_bases=args.bases
        )
        print(
            f"repository: {len(repo.files):,} files, {repo.total_bytes / 1e6:.1f} MB, "
            f"{repo.n_bases} bases from {origin} (built in {time.perf_counter() - t_build:.0f} s)",
            flush=True,
        )
        pg.create_database("bench_eta")
        db_url = pg.url("bench_eta")
        daemon = Daemon(work / "daemon", db_url)
        cpu0 = tree_cpu_s(daemon.proc.pid)
        t0 = time.monotonic()
        added = daemon.cli("add", INSTANCE, "--path", str(repo.root), "--flow", "code")
        if added.returncode != 0:
            raise RuntimeError(f"cocod add failed: {added.stdout}{added.stderr}")
        samples = sample_until_done(daemon, t0, args.interval, args.timeout)
        cpu_s = tree_cpu_s(daemon.proc.pid) - cpu0
        final = samples[-1]
        rows = count_rows(db_url, f"{INSTANCE}__chunks")
        total = next(s["t"] for s in samples if s["finished"])
        first_file = next((s["t"] for s in samples if (s["processed"] or 0) > 0), None)
        return {
            "meta": {
                "command": " ".join(["bench/progress_eta.py", *sys.argv[1:]]),
                "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_at_start": os.getloadavg(),
                "interval_s": args.interval,
                "corpus_origin": origin,
                "bases": repo.n_bases,
                "edit": args.edit,
            },
            "files": len(repo.files),
            "bytes": repo.total_bytes,
            "listed": final["listed"],
            "candidates": final["candidates"],
            "total_s": total,
            "first_file_done_s": first_file,
            "files_per_s": final["processed"] / total,
            "chunks": final["chunks"],
            "rows_in_table": rows,
            "chunks_per_s": final["chunks"] / total,
            "daemon_cpu_s": round(cpu_s, 1),
            "peak_rss_mb": max(s.get("rss_mb", 0.0) for s in samples),
            "samples": samples,
        }
    finally:
        if daemon is not None:
            daemon.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def print_report(r: dict[str, Any]) -> str:
    lines = [
        f"first index of {r['files']:,} files ({r['bytes'] / 1e6:.1f} MB; listed "
        f"{r['listed']:,}), {r['chunks']:,} chunks: {r['total_s']:.1f} s from `cocod add`, "
        f"{r['files_per_s']:.1f} files/s, {r['chunks_per_s']:.1f} chunks/s; first file "
        f"done at {r['first_file_done_s']:.1f} s; daemon CPU {r['daemon_cpu_s']:.0f} s, "
        f"peak RSS {r['peak_rss_mb']:.0f} MB",
        "",
        "| done | at (s) | left (s) | status ETA (s) | error s | error % of left "
        "| whole-pass rate % | since-first-file rate % | this tree's estimator % |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def pct(m: dict[str, Any], key: str) -> str:
        v = m[key]["error_pct"]
        return "–" if v is None else f"{v:+.1f}"

    for m in r["milestones"]:
        if m.get("sample", True) is None:
            lines.append(f"| {m['fraction']:.0%} | – | – | – | – | – | – | – | – |")
            continue
        st = m["status"]
        eta = "–" if st["eta_s"] is None else f"{st['eta_s']:.0f}"
        err = "–" if st["error_s"] is None else f"{st['error_s']:+.1f}"
        lines.append(
            f"| {m['fraction']:.0%} | {m['t_s']:.0f} | {m['actual_left_s']:.0f} | {eta} | {err} "
            f"| {pct(m, 'status')} | {pct(m, 'whole_pass_rate')} "
            f"| {pct(m, 'rate_since_first_file')} | {pct(m, 'cocod_estimator_replayed')} |"
        )
    text = "\n".join(lines)
    print(text)
    return text


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # so the daemon and Postgres stop too


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    if args.replay is not None:
        result = json.loads(args.replay.read_text())
        out = args.out or args.replay
    else:
        out = args.out or default_out(args.files)
        result = run(args)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))  # the samples are kept whatever follows
    result.pop("milestones", None)
    result.pop("table", None)
    samples = result.pop("samples")
    result["milestones"] = milestones(samples)
    result["table"] = print_report(result)
    result["samples"] = samples
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
