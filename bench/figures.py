"""The figures of issue 11, each a function of the harness (see bench/run.py for why).

Each records its values with ``Bench.record(figure, case, engine, metric, value)``; the
table (bench/report.py) and the plots (bench/plots.py) read them back by those names.
"""

from __future__ import annotations

import shutil
import time

import corpus as corpus_mod
import daemon_figures
from harness import Bench


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
        b.log(f"[engine] {size:,} files, {c0.total_bytes / 1e6:.1f} MB ({c0.n_bases} bases)")
        flow, table = f"BenchEngine{size}", f"bench_engine_{size}"
        for e in b.order(0):
            r = b.worker(e, "update", flow, table, corpora[e].root)
            b.record("engine", case, e, "initial_s", r["update_s"])
            b.record("engine", case, e, "initial_process_s", r["process_s"])
            b.record("engine", case, e, "chunks", r["rows"])
            b.record("engine", case, e, "chunks_per_s", r["rows"] / r["update_s"])
            b.record("engine", case, e, "initial_peak_rss_mb", r["peak_rss_mb"])
            b.log(
                f"  {e:<9} initial {r['update_s']:.2f} s, {r['rows']:,} chunks "
                f"({r['rows'] / r['update_s']:,.0f}/s), peak RSS {r['peak_rss_mb']:.0f} MB"
            )
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
                    b.log(
                        f"  {e:<9} {step:<6} fresh {r['update_s'] * 1000:7.1f} ms "
                        f"(process {r['process_s']:.2f} s), warm "
                        + ", ".join(f"{w * 1000:.1f}" for w in r["warm_s"])
                        + " ms"
                    )
        for e, c in corpora.items():
            if "live" in a.figures and size in a.live_files:
                b.kept[(e, size)] = (c, flow, table)  # the live figure watches it next
            else:
                shutil.rmtree(c.root, ignore_errors=True)


def fig_model(b: Bench) -> None:
    """(1) initial index with the real model against raw encode of the same chunk texts."""
    a = b.args
    for size in a.model_files:
        case = str(size)
        for run in range(a.model_repeats):
            for e in b.order(run):
                c = corpus_mod.build_corpus(
                    b.work / f"model-{e}-{size}-{run}", size, seed=a.seed + run, source=a.corpus
                )
                flow, table = f"BenchModel{size}r{run}", f"bench_model_{size}_r{run}"
                extra = ["--raw-rounds", str(a.raw_rounds), "--raw-texts", str(a.raw_texts)]
                r = b.worker(e, "model", flow, table, c.root, *extra)
                for k in (
                    "update_s",
                    "chunks_per_s",
                    "unique_texts_per_s",
                    "raw_texts_per_s",
                    "ratio_to_raw",
                    "unique_ratio_to_raw",
                    "raw_lanes_texts_per_s",
                    "unique_ratio_to_raw_lanes",
                ):
                    b.record("model", case, e, k, r.get(k))
                b.record("model", case, e, "peak_rss_mb", r["peak_rss_mb"])
                b.record("model", case, e, "chunks", r["rows"])
                b.record("model", case, e, "unique_texts", r["unique_texts"])
                b.log(
                    f"[model] {e:<9} {size} files: {r['rows']} chunks in {r['update_s']:.1f} s "
                    f"= {r['chunks_per_s']:.1f}/s; raw {r['raw_texts_per_s']:.1f}/s "
                    f"({r['ratio_to_raw']:.0%}; unique texts {r['unique_ratio_to_raw']:.0%}); "
                    f"peak RSS {r['peak_rss_mb']:.0f} MB"
                )
                shutil.rmtree(c.root, ignore_errors=True)


def fig_live(b: Bench) -> None:
    """(3) save-to-visible p50/p95, idle CPU, a burst; tiny embedder and real model."""
    a = b.args
    cases = [(f"{n}", n, False) for n in a.live_files]
    cases.append((f"model-{a.live_model_files}", a.live_model_files, True))
    for run_i, (case, n, model) in enumerate(cases):
        for e in b.order(run_i):
            kept = None if model else b.kept.pop((e, n), None)
            if kept is not None:  # indexed by the engine figure: the catch-up is a no-op
                c, flow, table = kept
            else:
                c = corpus_mod.build_corpus(
                    b.work / f"live-{e}-{case}", n, seed=a.seed, source=a.corpus
                )
                flow = f"BenchLive{case.replace('-', '')}"
                table = f"bench_live_{case.replace('-', '_')}"
            b.log(f"[live] {e:<9} {case}: watching {n:,} files")
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
            b.log(
                f"[live] {e:<9} {case}: p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, "
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
    b.log(f"[status] rows cocod status reports per instance: {r['reported_targets']}")
    b.log(
        f"[status] {a.status_rows:,} target rows: cocod status p50 "
        f"{r['status']['p50_ms']:.0f} ms, p95 {r['status']['p95_ms']:.0f} ms"
    )


MEMORY_DOC = """# Notes {i}

A small folder of its own for live instance {i}: one paragraph, so each instance embeds
one chunk and the figure measures what an instance costs to keep, not a first index.
"""


def fig_memory(b: Bench) -> None:
    """(5) resident memory with 1, 10, 50 live instances sharing one model.

    One small file per folder: what is measured is the daemon holding N live instances
    (watchers, flow objects, pools, one shared model), not N first indexes, which on a
    loaded 2-core machine made the 50-instance step outlast its timeout. All instances
    are in one config.toml, so the daemon starts them together; the RSS of the daemon and
    its children is read once every one is WATCHING.
    """
    a = b.args
    for run_i, n in enumerate(a.memory_instances):
        case = str(n)
        for e in b.order(run_i):
            root = b.work / f"memory-{e}-{n}"
            folders = []
            for i in range(n):
                folder = root / f"f{i}"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "notes.md").write_text(MEMORY_DOC.format(i=i))
                folders.append(folder)
            t0 = time.perf_counter()
            if e == "cocod":
                db = f"bench_daemon_mem{n}"
                b.pg.create_database(db)
                instances = [
                    daemon_figures.Instance(f"mem{i}", f, f"bench_mem_{i}", real_model=True)
                    for i, f in enumerate(folders)
                ]
                with daemon_figures.running_daemon(
                    root / "daemon", instances, b.pg.url(db), timeout=a.step_timeout
                ) as (daemon, _env):
                    ready_s = time.perf_counter() - t0
                    time.sleep(2.0)
                    r = daemon_figures.proc_memory_mb(daemon.pid)
                r["ready_s"] = ready_s
            else:
                flow, table = f"BenchMem{n}", f"bench_mem_{n}"
                extra = ["--instances", str(n), "--idle-s", "2", "--refresh-s", str(a.refresh_s)]
                r = b.worker(e, "memory", flow, table, root, *extra)
                r["ready_s"] = time.perf_counter() - t0
            b.record("memory", case, e, "rss_mb", r["rss_mb"])
            b.record("memory", case, e, "peak_rss_mb", r.get("peak_rss_mb"))
            b.record("memory", case, e, "self_peak_rss_mb", r.get("self_peak_rss_mb"))
            b.record("memory", case, e, "ready_s", r["ready_s"])
            b.log(
                f"[memory] {e:<9} {n} live instances: RSS {r['rss_mb']:.0f} MB "
                f"(all live after {r['ready_s']:.0f} s)"
            )
            shutil.rmtree(root, ignore_errors=True)


FIGURES = {
    "engine": fig_engine,
    "model": fig_model,
    "live": fig_live,
    "status": fig_status,
    "memory": fig_memory,
}
