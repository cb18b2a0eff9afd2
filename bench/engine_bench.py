"""Engine benchmark for cocod: initial index, no-op update and one-file edit on a docs corpus.

What it measures (per corpus size, default 1,000 and 5,000 files):

* **corpus** – the 61 real ``.md``/``.mdx`` files of the CocoIndex v0 docs
  (``../shared/corpus/cocoindex-v0-docs/src/content``, relative to the repository root)
  replicated round-robin to N files, each copy prefixed with a line naming it
  (``<!-- copy 17 of docs/core/basics.mdx -->``) so no two files are identical. This is how
  the CocoIndex 0.3.39 side-by-side figures were built: 100 files ≈ 800 KB / 565 chunks,
  5,000 files ≈ 44 MB / 30,490 chunks (8.7 KB per file). Total bytes and chunks are printed
  so the corpus can be checked against those figures.
* **flow** – written v0-style (``import cocod as cocoindex``): ``LocalFile`` →
  ``SplitRecursively(language="markdown", chunk_size=2000, chunk_overlap=500)`` → a cheap
  deterministic 8-dim "embedding" custom function (``cache=True``) → collector
  ``(filename, location, text, embedding)`` → ``targets.Postgres`` keyed by
  ``(filename, location)`` with a cosine vector index.
* **server start** – starting the embedded Postgres (or connecting to
  ``COCOD_DATABASE_URL``), once per process.
* **setup** – ``flow.setup()`` (tables, indexes, internal state).
* **initial index** – the first ``flow.update()``: wall seconds, chunks/s, files/s. Chunks are
  counted with SQL on the target table.
* **no-op update** – ``flow.update()`` with nothing changed, repeated (min / median ms).
* **one-file edit** – append a sentence to one paragraph of one file, then ``flow.update()``;
  repeated on different files (min / median ms). The rows the update touched are measured in
  the database: rows written (via ``xmin``), rows deleted, and whether any other file's rows
  were rewritten.
* **peak RSS** – ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of this process (the
  embedded Postgres server is a separate process and is not included).

Figures are compared with CocoIndex 0.3.39 measured on the same 2-core machine: initial index
1,060–1,415 chunks/s; no-op update of 5,000 files 69–146 ms; one-file edit 159 ms.

``--profile`` instead runs the initial index of the smallest size under cProfile, with one
profiler per thread (the event-loop thread and every worker thread), merges them and prints
the top functions by cumulative and by own time.

Run: ``.venv/bin/python bench/engine_bench.py [--sizes 1000,5000] [--profile]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import io
import os
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal, cast

import asyncpg
import numpy as np

import cocod as cocoindex
from cocod.runtime.context import get_context

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "cocoindex-v0-docs" / "src" / "content"
PATTERNS = ("*.md", "*.mdx")

# CocoIndex 0.3.39 on this machine (same corpus, same flow shape).
REF_INITIAL_CHUNKS_PER_S = (1060.0, 1415.0)
REF_NOOP_5000_MS = (69.0, 146.0)
REF_EDIT_MS = 159.0
REF_CHUNKS = {100: 565, 5000: 30490}
REF_BYTES = {100: 800_000, 5000: 44_000_000}


# ----------------------------------------------------------------------------------------
# The flow
# ----------------------------------------------------------------------------------------

_embed_lock = threading.Lock()
_embed_calls = 0


def embed_calls() -> int:
    with _embed_lock:
        return _embed_calls


@cocoindex.op.function(cache=True, behavior_version=1)
def bench_embed(text: str) -> cocoindex.Vector[np.float32, Literal[8]]:
    """A deterministic, cheap stand-in for a model: 8 floats from a hash of the text."""
    global _embed_calls
    with _embed_lock:
        _embed_calls += 1
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    vec = np.frombuffer(digest, dtype=np.uint8).astype(np.float32) + 1.0
    # At run time the annotation is an NDArray; statically ``Vector`` is its own class.
    return cast("cocoindex.Vector[np.float32, Literal[8]]", vec)


def make_flow_def(
    corpus_dir: Path, table_name: str
) -> Callable[[cocoindex.FlowBuilder, cocoindex.DataScope], None]:
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["documents"] = fb.add_source(
            cocoindex.sources.LocalFile(path=str(corpus_dir), included_patterns=list(PATTERNS))
        )
        chunks_out = scope.add_collector()
        with scope["documents"].row() as doc:
            doc["chunks"] = doc["content"].transform(
                cocoindex.functions.SplitRecursively(),
                language="markdown",
                chunk_size=2000,
                chunk_overlap=500,
            )
            with doc["chunks"].row() as chunk:
                chunk["embedding"] = chunk["text"].transform(bench_embed)
                chunks_out.collect(
                    filename=doc["filename"],
                    location=chunk["location"],
                    text=chunk["text"],
                    embedding=chunk["embedding"],
                )
        chunks_out.export(
            "chunks",
            cocoindex.targets.Postgres(table_name=table_name),
            primary_key_fields=["filename", "location"],
            vector_indexes=[
                cocoindex.VectorIndexDef(
                    "embedding", cocoindex.VectorSimilarityMetric.COSINE_SIMILARITY
                )
            ],
        )

    return define


# ----------------------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------------------


@dataclass
class Corpus:
    root: Path
    files: list[Path]
    total_bytes: int


def base_files(source: Path) -> list[Path]:
    found = {p for pattern in PATTERNS for p in source.rglob(pattern) if p.is_file()}
    return sorted(found, key=lambda p: p.relative_to(source).as_posix())


def build_corpus(source: Path, dest: Path, n_files: int) -> Corpus:
    """Replicate the base files round-robin to ``n_files``, each with a naming first line."""
    bases = base_files(source)
    if not bases:
        raise SystemExit(f"no *.md / *.mdx files under {source}")
    contents = [p.read_bytes() for p in bases]
    rels = [p.relative_to(source).as_posix() for p in bases]
    if dest.exists():
        shutil.rmtree(dest)
    files: list[Path] = []
    total = 0
    for i in range(n_files):
        copy, b = divmod(i, len(bases))
        path = dest / f"copy{copy:04d}" / rels[b]
        path.parent.mkdir(parents=True, exist_ok=True)
        data = f"<!-- copy {copy} of {rels[b]} -->\n".encode() + contents[b]
        path.write_bytes(data)
        files.append(path)
        total += len(data)
    return Corpus(dest, files, total)


def edit_one_paragraph(path: Path, tag: str) -> None:
    """Append a sentence to one prose paragraph near the middle of the file."""
    text = path.read_text()
    paras = text.split("\n\n")
    order = list(range(len(paras) // 2, len(paras))) + list(range(len(paras) // 2))
    target = next(
        (i for i in order if len(paras[i]) >= 40 and "```" not in paras[i]),
        len(paras) // 2,
    )
    paras[target] = paras[target].rstrip() + f" Edited by engine_bench ({tag})."
    path.write_text("\n\n".join(paras))


# ----------------------------------------------------------------------------------------
# SQL (asyncpg directly, on its own short-lived loop in the main thread)
# ----------------------------------------------------------------------------------------


class Sql:
    def __init__(self, url: str) -> None:
        self.url = url

    def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.url)
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    def fetchval(self, query: str, *args: object) -> Any:
        rows = self.fetch(query, *args)
        return rows[0][0] if rows else None

    def count(self, table: str) -> int:
        return int(self.fetchval(f"SELECT count(*) FROM {table}"))

    def current_xid(self) -> int:
        """A transaction id; rows written by later transactions have a larger ``xmin``."""
        return int(self.fetchval("SELECT pg_current_xact_id()::text::bigint")) % (1 << 32)

    def rows_of(self, table: str, filename: str) -> dict[str, str]:
        rows = self.fetch(
            f"SELECT location::text AS loc, md5(text) AS h FROM {table} WHERE filename = $1",
            filename,
        )
        return {r["loc"]: r["h"] for r in rows}

    def written_by_file(self, table: str, xid: int) -> dict[str, int]:
        rows = self.fetch(
            f"SELECT filename, count(*) AS n FROM {table} "
            "WHERE xmin::text::bigint > $1 GROUP BY filename",
            xid,
        )
        return {r["filename"]: int(r["n"]) for r in rows}


# ----------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def python_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on


def postmaster_pid(sql: Sql) -> int | None:
    """The server's pid when it runs on this machine (its data directory is readable)."""
    try:
        data_dir = str(sql.fetchval("SELECT current_setting('data_directory')"))
        pid = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
    except Exception:
        return None
    return pid if _proc_stat(pid) is not None else None


def postgres_cpu_seconds(postmaster: int | None) -> float | None:
    """CPU seconds of the server: postmaster, live children and reaped children."""
    if postmaster is None:
        return None
    pm = _proc_stat(postmaster)
    if pm is None:
        return None
    ticks = sum(int(x) for x in pm[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != postmaster:
            st = _proc_stat(int(entry.name))
            if st is not None and int(st[1]) == postmaster:
                ticks += int(st[11]) + int(st[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def ms(seconds: float) -> float:
    return seconds * 1000.0


@dataclass
class EditResult:
    filename: str
    ms: float
    source_stats: str
    inserted: int
    updated: int
    deleted: int
    written: int
    other_files_written: int
    embed_calls: int


@dataclass
class SizeResult:
    n_files: int
    total_bytes: int
    corpus_build_s: float
    setup_s: float = 0.0
    initial_s: float = 0.0
    chunks: int = 0
    initial_embed_calls: int = 0
    initial_python_cpu_s: float = 0.0
    initial_postgres_cpu_s: float | None = None
    initial_stats: str = ""
    noop_ms: list[float] = field(default_factory=list)
    noop_changed: list[str] = field(default_factory=list)
    noop_written: list[int] = field(default_factory=list)
    edits: list[EditResult] = field(default_factory=list)
    peak_rss_after_initial_mb: float = 0.0
    peak_rss_mb: float = 0.0
    drop_s: float = 0.0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.initial_s if self.initial_s else 0.0

    @property
    def files_per_s(self) -> float:
        return self.n_files / self.initial_s if self.initial_s else 0.0


def source_stats(info: cocoindex.IndexUpdateInfo) -> str:
    return "; ".join(f"{name}: {s.describe()}" for name, s in info.sources.items())


def has_changes(info: cocoindex.IndexUpdateInfo) -> bool:
    return any(s.has_changes for s in info.sources.values())


def open_bench_flow(n_files: int, corpus_dir: Path) -> tuple[cocoindex.Flow, str]:
    name = f"EngineBench{n_files}"
    table = f"engine_bench_chunks_{n_files}"
    flow = cocoindex.open_flow(name, make_flow_def(corpus_dir, table))
    # A previous run against the same COCOD_DATABASE_URL may have left the flow behind.
    try:
        flow.drop()
    except Exception as e:
        print(f"  (pre-run drop of {name} failed, continuing: {type(e).__name__}: {e})")
    return flow, table


def run_size(n_files: int, source: Path, workdir: Path, sql: Sql, repeats: int) -> SizeResult:
    print(f"\n=== {n_files:,} files ===", flush=True)
    t0 = time.perf_counter()
    corpus = build_corpus(source, workdir / f"corpus_{n_files}", n_files)
    res = SizeResult(n_files, corpus.total_bytes, time.perf_counter() - t0)
    print(
        f"corpus: {n_files:,} files, {corpus.total_bytes:,} bytes "
        f"({corpus.total_bytes / 1e6:.1f} MB, {corpus.total_bytes / n_files / 1e3:.1f} KB/file), "
        f"built in {res.corpus_build_s:.2f} s",
        flush=True,
    )
    if n_files in REF_BYTES:
        print(f"  reference corpus: ≈ {REF_BYTES[n_files] / 1e6:.1f} MB")

    flow, table = open_bench_flow(n_files, corpus.root)
    try:
        gc.collect()
        t0 = time.perf_counter()
        flow.setup()
        res.setup_s = time.perf_counter() - t0
        print(f"setup: {res.setup_s:.3f} s", flush=True)

        pm = postmaster_pid(sql)
        calls0 = embed_calls()
        cpu0, pg0 = python_cpu_seconds(), postgres_cpu_seconds(pm)
        t0 = time.perf_counter()
        info = flow.update()
        res.initial_s = time.perf_counter() - t0
        res.initial_python_cpu_s = python_cpu_seconds() - cpu0
        pg1 = postgres_cpu_seconds(pm)
        if pg0 is not None and pg1 is not None:
            res.initial_postgres_cpu_s = pg1 - pg0
        res.initial_embed_calls = embed_calls() - calls0
        res.initial_stats = source_stats(info)
        res.chunks = sql.count(table)
        res.peak_rss_after_initial_mb = peak_rss_mb()
        print(
            f"initial index: {res.initial_s:.2f} s, {res.chunks:,} chunks "
            f"({res.chunks / n_files:.2f}/file), {res.chunks_per_s:,.0f} chunks/s, "
            f"{res.files_per_s:,.0f} files/s, {res.initial_embed_calls:,} embed calls, "
            f"peak RSS {res.peak_rss_after_initial_mb:,.0f} MB",
            flush=True,
        )
        print(
            f"  CPU during initial index: python {res.initial_python_cpu_s:.2f} s "
            f"({res.initial_python_cpu_s / res.initial_s:.0%} of wall)"
            + (
                f", postgres {res.initial_postgres_cpu_s:.2f} s "
                f"({res.initial_postgres_cpu_s / res.initial_s:.0%} of wall)"
                if res.initial_postgres_cpu_s is not None
                else ", postgres n/a (server not local)"
            )
            + f"; {os.cpu_count()} CPUs"
        )
        print(f"  {res.initial_stats}")
        if n_files in REF_CHUNKS:
            print(f"  reference chunks: {REF_CHUNKS[n_files]:,}")

        for i in range(repeats):
            xid = sql.current_xid()
            t0 = time.perf_counter()
            info = flow.update()
            elapsed = time.perf_counter() - t0
            res.noop_ms.append(ms(elapsed))
            res.noop_written.append(sum(sql.written_by_file(table, xid).values()))
            if has_changes(info):
                res.noop_changed.append(source_stats(info))
            print(
                f"no-op update #{i + 1}: {ms(elapsed):.1f} ms, "
                f"rows written {res.noop_written[-1]}"
                + (f"  [CHANGES REPORTED: {source_stats(info)}]" if has_changes(info) else ""),
                flush=True,
            )

        for i in range(repeats):
            path = corpus.files[(i * n_files // repeats + n_files // (2 * repeats)) % n_files]
            filename = path.relative_to(corpus.root).as_posix()
            before = sql.rows_of(table, filename)
            edit_one_paragraph(path, f"edit {i + 1}")
            xid = sql.current_xid()
            calls0 = embed_calls()
            t0 = time.perf_counter()
            info = flow.update()
            elapsed = time.perf_counter() - t0
            calls = embed_calls() - calls0
            after = sql.rows_of(table, filename)
            written = sql.written_by_file(table, xid)
            edit = EditResult(
                filename=filename,
                ms=ms(elapsed),
                source_stats=source_stats(info),
                inserted=len(after.keys() - before.keys()),
                updated=sum(1 for k in after.keys() & before.keys() if after[k] != before[k]),
                deleted=len(before.keys() - after.keys()),
                written=sum(written.values()),
                other_files_written=sum(n for f, n in written.items() if f != filename),
                embed_calls=calls,
            )
            res.edits.append(edit)
            print(
                f"one-file edit #{i + 1} ({filename}): {edit.ms:.1f} ms; rows of the file "
                f"{len(before)}→{len(after)}: +{edit.inserted} ~{edit.updated} "
                f"-{edit.deleted}; rows written {edit.written} "
                f"(other files {edit.other_files_written}); embed calls {calls}",
                flush=True,
            )
            print(f"  {edit.source_stats}")
        res.peak_rss_mb = peak_rss_mb()
    finally:
        t0 = time.perf_counter()
        try:
            flow.drop()
        except Exception as e:
            print(f"  (drop failed: {type(e).__name__}: {e})")
        res.drop_s = time.perf_counter() - t0
        flow.close()
        shutil.rmtree(corpus.root, ignore_errors=True)
    return res


def med(values: list[int]) -> int:
    return int(statistics.median(values)) if values else 0


def fmt_range(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.0f} / {statistics.median(values):.0f}"


def print_table(results: list[SizeResult]) -> None:
    headers = [
        "files",
        "MB",
        "chunks",
        "setup s",
        "initial s",
        "chunks/s",
        "files/s",
        "no-op ms min/med",
        "edit ms min/med",
        "edit rows +/~/-",
        "edit written",
        "peak RSS MB",
    ]
    rows: list[list[str]] = []
    for r in results:
        rows.append(
            [
                f"{r.n_files:,}",
                f"{r.total_bytes / 1e6:.1f}",
                f"{r.chunks:,}",
                f"{r.setup_s:.2f}",
                f"{r.initial_s:.2f}",
                f"{r.chunks_per_s:,.0f}",
                f"{r.files_per_s:,.0f}",
                fmt_range(r.noop_ms),
                fmt_range([e.ms for e in r.edits]),
                f"{med([e.inserted for e in r.edits])}/{med([e.updated for e in r.edits])}/"
                f"{med([e.deleted for e in r.edits])}",
                f"{med([e.written for e in r.edits])}",
                f"{r.peak_rss_mb:,.0f}",
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    print("\n" + "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print("(edit rows: median per edit of the edited file's rows inserted/updated/deleted)")

    lo, hi = REF_INITIAL_CHUNKS_PER_S
    print("\nvs CocoIndex 0.3.39 on this machine:")
    for r in results:
        print(
            f"  {r.n_files:>6,} files  initial {r.chunks_per_s:7,.0f} chunks/s "
            f"(ref {lo:,.0f}–{hi:,.0f}: {r.chunks_per_s / hi:.2f}–{r.chunks_per_s / lo:.2f}×)"
            f"  no-op median {statistics.median(r.noop_ms):6.0f} ms"
            + (
                f" (ref 5,000 files {REF_NOOP_5000_MS[0]:.0f}–{REF_NOOP_5000_MS[1]:.0f} ms)"
                if r.n_files == 5000
                else ""
            )
            + f"  edit median {statistics.median([e.ms for e in r.edits]):6.0f} ms "
            f"(ref {REF_EDIT_MS:.0f} ms)"
            if r.noop_ms and r.edits
            else f"  {r.n_files:>6,} files  incomplete"
        )
        if r.n_files in REF_CHUNKS:
            ref_chunks = REF_CHUNKS[r.n_files]
            f_lo, f_hi = (c * r.n_files / ref_chunks for c in REF_INITIAL_CHUNKS_PER_S)
            print(
                f"          chunks {r.chunks:,} (ref {ref_chunks:,}: {r.chunks / ref_chunks:.1%}); "
                f"so compare files/s too: {r.files_per_s:,.0f} vs ref {f_lo:,.0f}–{f_hi:,.0f}"
            )
    problems = (
        [f"{r.n_files} files: no-op reported changes: {c}" for r in results for c in r.noop_changed]
        + [f"{r.n_files} files: no-op wrote {w} rows" for r in results for w in r.noop_written if w]
        + [
            f"{r.n_files} files: edit of {e.filename} rewrote {e.other_files_written} rows of "
            "other files"
            for r in results
            for e in r.edits
            if e.other_files_written
        ]
    )
    for p in problems:
        print(f"WARNING: {p}")


# ----------------------------------------------------------------------------------------
# Profiling: one cProfile.Profile per thread (cProfile only sees the thread it runs in)
# ----------------------------------------------------------------------------------------


StatsKey = tuple[str, int, str]
StatsDict = dict[StatsKey, Any]

_IDLE_FUNCS = {"<method 'acquire' of '_thread.lock' objects>"}
_IDLE_FILES = ("threading.py", "queue.py")


class ThreadProfilers:
    """Gives every thread started after ``install()`` its own enabled profiler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.profilers: dict[int, tuple[str, cProfile.Profile]] = {}

    def _hook(self, frame: FrameType, event: str, arg: object) -> None:
        sys.setprofile(None)
        prof = cProfile.Profile()
        with self._lock:
            self.profilers[threading.get_ident()] = (threading.current_thread().name, prof)
        prof.enable()

    def install(self) -> None:
        threading.setprofile(self._hook)

    def reset(self) -> None:
        """Forget what was recorded so far (threads keep their profilers enabled)."""
        with self._lock:
            for _, prof in self.profilers.values():
                prof.clear()

    def snapshot(self) -> list[tuple[str, StatsDict]]:
        with self._lock:
            items = list(self.profilers.values())
        out: list[tuple[str, StatsDict]] = []
        for name, prof in items:
            # snapshot_stats() reads without disabling: disable() would act on *this* thread.
            prof.snapshot_stats()
            stats: StatsDict = dict(prof.stats)
            if stats:
                out.append((name, stats))
        return out


class _StatsHolder:
    def __init__(self, stats: StatsDict) -> None:
        self.stats = dict(stats)  # pstats.Stats.add() mutates the first dict in place

    def create_stats(self) -> None:
        pass


def idle_seconds(stats: StatsDict) -> float:
    """Own time of a worker thread spent waiting for work (blocked in ``queue.get``)."""
    return float(sum(v[2] for k, v in stats.items() if k[2] in _IDLE_FUNCS))


def without_idle(stats: StatsDict) -> StatsDict:
    """Drop the waiting-for-work frames of worker threads (and the thread bootstrap)."""
    return {
        k: v
        for k, v in stats.items()
        if k[2] not in _IDLE_FUNCS
        and not k[0].endswith(_IDLE_FILES)
        and not (k[0].endswith("_backends/_asyncio.py") and k[2] == "run")
    }


def merge_stats(dicts: list[StatsDict]) -> pstats.Stats | None:
    merged: pstats.Stats | None = None
    for d in dicts:
        st = pstats.Stats(_StatsHolder(d))  # type: ignore[arg-type]
        if merged is None:
            merged = st
        else:
            merged.add(st)
    return merged


def print_top(stats: pstats.Stats, sort: str, n: int) -> None:
    buf = io.StringIO()
    stats.stream = buf  # type: ignore[attr-defined]
    stats.sort_stats(sort).print_stats(n)
    text = buf.getvalue()
    start = text.find("   ncalls")
    print(text[start:].rstrip() + "\n" if start >= 0 else text)


# (thread group, label, file suffix, function). cProfile counts every resumption of a
# coroutine as a call, so only plain functions are counted here.
COUNTED_CALLS = (
    ("workers", "thread hops (worker → loop wake-ups)", "base_events.py", "call_soon_threadsafe"),
    ("workers", "  of which file reads", "local_file.py", "read_row_sync"),
    ("workers", "  self-pipe socket.send", "", "<method 'send' of '_socket.socket' objects>"),
    ("loop", "asyncpg API calls (_check_open)", "asyncpg/connection.py", "_check_open"),
    ("loop", "pool acquisitions", "asyncpg/pool.py", "acquire"),
    ("loop", "  reset query on release", "asyncpg/connection.py", "get_reset_query"),
    ("loop", "transactions", "asyncpg/transaction.py", "__init__"),
    ("loop", "socket.send to Postgres", "", "<method 'send' of '_socket.socket' objects>"),
    ("loop", "socket.recv from Postgres", "", "<method 'recv' of '_socket.socket' objects>"),
    ("loop", "loop iterations (_run_once)", "base_events.py", "_run_once"),
    ("loop", "epoll.poll (loop waiting)", "", "<method 'poll' of 'select.epoll' objects>"),
)


def print_call_counts(groups: dict[str, list[StatsDict]], n_files: int) -> None:
    print("selected calls (per thread group):")
    for group, label, file_suffix, func in COUNTED_CALLS:
        calls = 0
        tottime = cumtime = 0.0
        for raw in groups[group]:
            for (fname, _, fn), (_, nc, tt, ct, _) in raw.items():
                if fn == func and fname.endswith(file_suffix):
                    calls += nc
                    tottime += tt
                    cumtime += ct
        print(
            f"  {group:<7} {label:<40} {calls:8,} ({calls / n_files:5.1f}/file)  "
            f"tottime {tottime:6.2f} s  cumtime {cumtime:6.2f} s"
        )
    print()


def run_profile(
    profilers: ThreadProfilers, n_files: int, source: Path, workdir: Path, sql: Sql, top: int
) -> None:
    print(f"\n=== profile: initial index of {n_files:,} files ===", flush=True)
    corpus = build_corpus(source, workdir / f"corpus_{n_files}", n_files)
    print(f"corpus: {n_files:,} files, {corpus.total_bytes:,} bytes", flush=True)
    flow, table = open_bench_flow(n_files, corpus.root)
    try:
        flow.setup()
        profilers.reset()
        pm = postmaster_pid(sql)
        cpu0, pg0 = python_cpu_seconds(), postgres_cpu_seconds(pm)
        t0 = time.perf_counter()
        flow.update()
        elapsed = time.perf_counter() - t0
        cpu, pg = python_cpu_seconds() - cpu0, postgres_cpu_seconds(pm)
        per_thread = profilers.snapshot()
        chunks = sql.count(table)
        print(
            f"profiled initial index: {elapsed:.2f} s wall, {chunks:,} chunks "
            f"({chunks / elapsed:,.0f} chunks/s under the profiler); "
            f"python CPU {cpu:.2f} s"
            + (f", postgres CPU {pg - pg0:.2f} s" if pg is not None and pg0 is not None else ""),
            flush=True,
        )
        print("\nper-thread profiled time (own times; workers: busy = total − waiting for work):")
        loop_stats: list[StatsDict] = []
        worker_stats: list[StatsDict] = []
        for name, st in per_thread:
            total = sum(v[2] for v in st.values())
            if name == "cocod-loop":
                loop_stats.append(st)
                print(f"  {name:<24} {total:8.2f} s")
            else:
                worker_stats.append(without_idle(st))
                print(f"  {name:<24} {total:8.2f} s, busy {total - idle_seconds(st):6.2f} s")
        merged = merge_stats(loop_stats + worker_stats)
        if merged is None:
            print("no profile data from cocod's threads")
            return
        print()
        print_call_counts({"loop": loop_stats, "workers": worker_stats}, n_files)
        print(
            "note: own time of calls that release the GIL (send, open, read, poll) includes\n"
            "waiting to get the GIL back; worker frames waiting for work are left out.\n"
        )
        print(f"--- top {top} by cumulative time (all threads merged) ---")
        print_top(merged, "cumulative", top)
        print(f"--- top {top} by own time (tottime, all threads merged) ---")
        print_top(merged, "tottime", top)
        loop = merge_stats(loop_stats)
        if loop is not None:
            print(f"--- top {top // 2} by cumulative time (event-loop thread only) ---")
            print_top(loop, "cumulative", top // 2)
        workers = merge_stats(worker_stats)
        if workers is not None:
            print(f"--- top {top // 2} by cumulative time (worker threads only) ---")
            print_top(workers, "cumulative", top // 2)
    finally:
        threading.setprofile(None)
        try:
            flow.drop()
        except Exception as e:
            print(f"  (drop failed: {type(e).__name__}: {e})")
        flow.close()


# ----------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------


def parse_sizes(raw: str) -> list[int]:
    try:
        sizes = sorted({int(s.replace("_", "")) for s in raw.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes expects e.g. 1000,5000, got {raw!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError("--sizes must be positive integers")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=parse_sizes, default=[1000, 5000], help="e.g. 1000,5000")
    parser.add_argument("--repeats", type=int, default=5, help="no-op and edit repetitions")
    parser.add_argument("--workdir", type=Path, help="where to build corpora (default: temp)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="base corpus dir")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the benchmark, profile the initial index of the smallest size",
    )
    parser.add_argument("--top", type=int, default=40, help="rows per profile listing")
    args = parser.parse_args(argv)

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="cocod-bench-", dir=args.workdir))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="cocod-bench-"))

    settings = cocoindex.Settings.from_env()
    if settings.database is None and settings.state_dir is None:
        settings = settings.replace(state_dir=workdir / "state")
    print(
        f"cocod {cocoindex.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; base corpus {args.corpus} "
        f"({len(base_files(args.corpus))} files)"
    )
    print("load average at start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(
        "database: "
        + (
            "COCOD_DATABASE_URL"
            if settings.database is not None
            else f"embedded Postgres in {settings.state_dir}"
        ),
        flush=True,
    )

    profilers = ThreadProfilers()
    if args.profile:
        profilers.install()  # before cocod starts its event-loop and worker threads
    try:
        cocoindex.init(settings)
        t0 = time.perf_counter()
        url = get_context().database_url
        print(f"server start / connect: {time.perf_counter() - t0:.2f} s", flush=True)
        sql = Sql(url)
        sql.fetchval("SELECT 1")

        if args.profile:
            run_profile(profilers, args.sizes[0], args.corpus, workdir, sql, args.top)
            return 0

        results: list[SizeResult] = []
        for n in args.sizes:
            results.append(run_size(n, args.corpus, workdir, sql, args.repeats))
        print_table(results)
        return 0
    finally:
        print("load average at end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
        cocoindex.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
