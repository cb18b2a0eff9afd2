"""Live mode, stage by stage: where a save's time goes before it is visible, and idle CPU.

Why beside run.py's live figure: that figure gives one number per size (save → visible);
shortening it needs each stage of the path timed on the same edits — watcher (the save
until the source loop has the hint), queue (hint until the pass starts), pass
(``update_source``: lookup, read, split, embed, commit; with the model's encode and the
commit shown inside it) and visibility (commit until a
separate connection sees the row) — and a 50,000-file corpus indexed once and reused.

    .venv/bin/python bench/live_latency.py --files 50000 --workdir /tmp/probe50k
    .venv/bin/python bench/live_latency.py --files 61 --model --workdir /tmp/live-model

The workdir layout is bench/scale_probe.py's (``corpus/``, ``pg/``, database ``probe``,
flow ``Probe<N>``, table ``probe_<N>``), so a corpus that scale_probe indexed is watched
as it is; otherwise it is built and indexed here first (``--model``: flow
``ProbeModel<N>`` over ``model-corpus/``). One process: the engine runs its
``FlowLiveUpdater`` in it (the watcher's thread, the event loop, the passes), as in
run.py's live figure. Each edit (``--edits``, a random pause of up to ``--jitter-s``
before each) appends a sentence to a paragraph of one file (bench/corpus.py
``edit_file``); the clock stops when a lookup from another connection sees it. The
observer runs in this process, beside the engine, so it looks as each pass ends
(``--observer pass``, the default; and every 50 ms in case a commit outside a pass ever
shows the edit): its lookups, every ms (``--observer poll``, the old way), took the GIL
and a share of the 2 cores from the very pass they were timing (seen: a lookup taking
3-5 ms in the middle of a 25 ms pass). The stages come from timestamps taken around the source
loop's hint callback and ``FlowExecution.update_source`` (wrapped here, not changed).
Idle CPU: this process over ``--idle-s`` seconds once watching, and separately the
embedded Postgres server and its backends. ``--burst N`` then rewrites N files at once
and times until all show their marker. It prints one table; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus as corpus_mod
import worker
from procmem import tree_cpu_s
from setup_db import BenchPostgres

STAMPS: dict[str, list[float]] = {"hint": [], "pass_start": [], "pass_end": []}
PASS_ENDED = threading.Condition()
"""Notified at each pass's end: the observer looks for the edit then, not every ms."""
SPANS: dict[str, list[tuple[float, float]]] = {"encode": [], "commit": []}
"""(start, end) of each model encode and each commit inside the passes: the pass's
sub-stages, attributed to an edit by the pass window they fall in."""
ENCODED: list[tuple[float, int]] = []
"""(start, number of texts) of each encode: how many chunks an edit re-embedded."""


def instrument() -> None:
    """Timestamps at the source loop's hint callback and around each pass (bench only)."""
    from cocod.executors.embedder import SentenceTransformerExecutor
    from cocod.runtime.execution import FlowExecution
    from cocod.runtime.source_loop import SourceLoop
    from cocod.storage.state import PostgresStateStore

    on_hints = SourceLoop._on_hints
    update_source = FlowExecution.update_source

    def stamped_hints(self: SourceLoop, hints: Any) -> None:
        STAMPS["hint"].append(time.perf_counter())
        on_hints(self, hints)

    async def stamped_update(self: FlowExecution, *args: Any, **kwargs: Any) -> Any:
        STAMPS["pass_start"].append(time.perf_counter())
        try:
            return await update_source(self, *args, **kwargs)
        finally:
            STAMPS["pass_end"].append(time.perf_counter())
            with PASS_ENDED:
                PASS_ENDED.notify_all()

    SourceLoop._on_hints = stamped_hints  # type: ignore[method-assign]
    FlowExecution.update_source = stamped_update  # type: ignore[method-assign]
    span_async(PostgresStateStore, "commit_rows", "commit")
    span_async(SentenceTransformerExecutor, "__call__", "encode")
    encode = SentenceTransformerExecutor.__call__

    async def counted(self: Any, texts: Any) -> Any:
        ENCODED.append((time.perf_counter(), len(texts)))
        return await encode(self, texts)

    SentenceTransformerExecutor.__call__ = counted  # type: ignore[method-assign]


def span_async(cls: Any, name: str, label: str) -> None:
    """Record the (start, end) of every call of the coroutine method ``cls.name``."""
    original = getattr(cls, name)

    async def spanned(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            SPANS[label].append((t0, time.perf_counter()))

    setattr(cls, name, spanned)


def spent_in(label: str, start: float, end: float) -> float:
    """Seconds of ``label`` spans that began inside the window [start, end]."""
    return sum(b - a for a, b in SPANS[label] if start <= a <= end)


def first_after(stamps: list[float], t: float) -> float | None:
    return next((s for s in stamps if s >= t), None)


def percentile(ms: list[float], q: float) -> float:
    ms = sorted(ms)
    return ms[min(len(ms) - 1, round(q * (len(ms) - 1)))]


def postgres_cpu_s(pg: BenchPostgres) -> float:
    pid = pg._handle.postmaster_pid
    return tree_cpu_s(pid) if pid else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--model", action="store_true", help="the real all-MiniLM-L6-v2 model")
    p.add_argument("--edits", type=int, default=40)
    p.add_argument("--jitter-s", type=float, default=0.3)
    p.add_argument("--idle-s", type=float, default=20.0)
    p.add_argument("--burst", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the samples here")
    p.add_argument(
        "--observer",
        choices=("pass", "poll"),
        default="pass",
        help="look for the edit at each pass's end (and every 5 ms), or every ms",
    )
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    pg = BenchPostgres(work / "pg")
    try:
        return run(args, work, pg)
    finally:
        pg.stop()


def run(args: argparse.Namespace, work: Path, pg: BenchPostgres) -> int:
    n = args.files
    prefix = "model-" if args.model else ""
    root = work / f"{prefix}corpus"
    flow_name = f"ProbeModel{n}" if args.model else f"Probe{n}"
    table = f"probe_model_{n}" if args.model else f"probe_{n}"
    url = pg.url("probe")
    if not (work / "indexed").exists() and not (work / "db-created").exists():
        pg.create_database("probe")  # scale_probe.py's database, unless it made it
        (work / "db-created").write_text("ok")
    if not root.exists():
        c = corpus_mod.build_corpus(root, n, seed=args.seed)
        (work / f"{prefix}files.json").write_text(json.dumps(c.files))
    os.environ["COCOD_DATABASE_URL"] = url
    os.environ["COCOD_STATE_DIR"] = str(work / "state")
    worker.load_engine("cocod")
    instrument()
    cocoindex = worker.cocoindex
    flow = cocoindex.open_flow(
        flow_name,
        worker.make_flow(root, table, real_model=args.model, refresh_s=None, vector_index=True),
    )
    flow.setup()
    t0 = time.perf_counter()
    flow.update()
    print(f"catch-up: {time.perf_counter() - t0:.1f} s ({n:,} files)", flush=True)
    db = worker.Db(url)
    files = json.loads((work / f"{prefix}files.json").read_text())
    files = [f for f in files if (root / f).exists()]
    rng = random.Random(args.seed)
    rows: list[dict[str, float]] = []
    with cocoindex.FlowLiveUpdater(flow):
        time.sleep(1.0)
        if args.model:
            wait_model_loaded()  # a no-op catch-up leaves the load to the updater's warm-up
        for i in range(args.edits):
            time.sleep(rng.uniform(0.0, args.jitter_s))
            rel = files[(i * 7919) % len(files)]
            marker = f"live{i}x{time.time_ns()}"
            t_save = time.perf_counter()
            corpus_mod.edit_file(root / rel, marker)
            t_written = time.perf_counter()
            visible = wait_visible(db, table, rel, marker, args.observer)
            time.sleep(0.05)  # let the pass's end stamp land
            rows.append(stages(t_save, t_written, visible))
        time.sleep(1.0)
        c0, pg0, w0 = tree_cpu_s(), postgres_cpu_s(pg), time.perf_counter()
        time.sleep(args.idle_s)
        wall = time.perf_counter() - w0
        idle = (tree_cpu_s() - c0) / wall * 100
        idle_pg = (postgres_cpu_s(pg) - pg0) / wall * 100
        burst_s = run_burst(db, table, root, files[: args.burst]) if args.burst else None
    db.close()
    flow.close()
    cocoindex.stop()  # before the server stops: the pool would retry its floor
    report(args, rows, idle, idle_pg, burst_s)
    if args.json:
        args.json.write_text(json.dumps({"edits": rows, "idle_pct": idle, "pg_idle_pct": idle_pg}))
    return 0


def wait_model_loaded(timeout_s: float = 120.0) -> None:
    """Until the process has the model: edits made while it loads time the load."""
    from cocod.executors import embedder

    deadline = time.perf_counter() + timeout_s
    while not embedder._models:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the model did not load in {timeout_s:.0f} s")
        time.sleep(0.05)
    time.sleep(0.5)  # the warm-up's own first encode, if any


def wait_visible(db: worker.Db, table: str, rel: str, marker: str, observer: str) -> float:
    """When another connection first sees ``marker`` in ``rel``'s rows."""
    deadline = time.perf_counter() + 60.0
    query = f"SELECT text FROM {table} WHERE filename = $1"
    while True:
        ends = len(STAMPS["pass_end"])
        if any(marker in r["text"] for r in db.rows(query, rel)):
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{rel}: {marker} not visible after 60 s")
        if observer == "poll":
            time.sleep(0.001)
            continue
        with PASS_ENDED:  # a pass that ended since the lookup above is not waited for
            if len(STAMPS["pass_end"]) == ends:
                PASS_ENDED.wait(0.05)


def stages(t_save: float, t_written: float, visible: float) -> dict[str, float]:
    hint = first_after(STAMPS["hint"], t_save) or visible
    start = first_after(STAMPS["pass_start"], hint) or visible
    end = first_after(STAMPS["pass_end"], start) or visible
    ms: Callable[[float, float], float] = lambda a, b: (b - a) * 1000  # noqa: E731
    return {
        "total": ms(t_save, visible),
        "write": ms(t_save, t_written),
        "watcher": ms(t_written, hint),
        "queue": ms(hint, start),
        "pass": ms(start, end),
        "pass: encode": spent_in("encode", start, end) * 1000,
        "pass: commit": spent_in("commit", start, end) * 1000,
        "texts encoded": float(sum(n for t, n in ENCODED if start <= t <= end)),
        "visible": ms(end, visible),
    }


def run_burst(db: worker.Db, table: str, root: Path, burst: list[str]) -> float:
    marker = f"burst{time.time_ns()}"
    t0 = time.perf_counter()
    for rel in burst:
        corpus_mod.edit_file(root / rel, marker)
    deadline = t0 + 900.0
    query = f"SELECT count(DISTINCT filename) FROM {table} WHERE text LIKE $1"
    while int(db.val(query, f"%{marker}%")) < len(burst):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"burst of {len(burst)} not visible after 900 s")
        time.sleep(0.1)
    return time.perf_counter() - t0


def report(
    args: argparse.Namespace,
    rows: list[dict[str, float]],
    idle: float,
    idle_pg: float,
    burst_s: float | None,
) -> None:
    what = "real model" if args.model else "tiny embedder"
    print(
        f"\n{args.files:,} files watched, {what}, {len(rows)} edits (ms), observer: {args.observer}"
    )
    print("| stage | p50 | p95 | max |\n|---|---:|---:|---:|")
    for key in (
        "total",
        "write",
        "watcher",
        "queue",
        "pass",
        "pass: encode",
        "pass: commit",
        "visible",
        *(("texts encoded",) if args.model else ()),
    ):
        ms = [r[key] for r in rows]
        print(
            f"| {key} | {statistics.median(ms):.1f} | {percentile(ms, 0.95):.1f} | {max(ms):.1f} |"
        )
    print(
        f"\nidle CPU over {args.idle_s:.0f} s: this process {idle:.2f} %, Postgres {idle_pg:.2f} %"
    )
    if burst_s is not None:
        print(f"burst of {args.burst:,} files: all visible after {burst_s:.1f} s")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
