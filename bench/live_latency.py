"""Save-to-visible latency of live updates, idle CPU while watching, and burst absorption.

What it measures (all against the embedded Postgres, in this process):
  * latency: write a file, then poll the target table from a separate connection until
    the new text is there; repeated over --edits edits; prints p50/p95/max in ms.
    Once with a tiny deterministic embedder, once with the real all-MiniLM-L6-v2 model
    (a one-paragraph edit of a real document).
  * idle CPU: process CPU time over --idle-seconds while watching --files files
    (the embedded Postgres server is a separate process and not counted).
  * burst: rewrite --burst files at once (a `git checkout`), time until all are visible.

Run: .venv/bin/python bench/live_latency.py [--files 5000] [--edits 50] [--burst 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Literal

import asyncpg
import numpy as np

import cocod as cocoindex
from cocod.runtime.context import get_context

CORPUS = (
    Path(__file__).resolve().parent.parent.parent
    / "shared"
    / "corpus"
    / "cocoindex-v0-docs"
    / "src"
    / "content"
    / "docs"
)


@cocoindex.op.function(cache=True, behavior_version=1)
def bench_tiny_embed(text: str) -> cocoindex.Vector[np.float32, Literal[8]]:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return np.frombuffer(digest, dtype=np.uint8).astype(np.float32)


def make_flow(source: Path, real_model: bool):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["files"] = fb.add_source(cocoindex.sources.LocalFile(path=str(source)))
        out = scope.add_collector()
        with scope["files"].row() as f:
            f["chunks"] = f["content"].transform(
                cocoindex.functions.SplitRecursively(),
                language="markdown",
                chunk_size=2000,
                chunk_overlap=500,
            )
            with f["chunks"].row() as c:
                if real_model:
                    c["vec"] = c["text"].transform(
                        cocoindex.functions.SentenceTransformerEmbed(
                            model="sentence-transformers/all-MiniLM-L6-v2"
                        )
                    )
                else:
                    c["vec"] = c["text"].transform(bench_tiny_embed)
                out.collect(
                    filename=f["filename"], location=c["location"], text=c["text"], vec=c["vec"]
                )
        out.export(
            "chunks",
            cocoindex.targets.Postgres(),
            primary_key_fields=["filename", "location"],
            vector_indexes=[
                cocoindex.VectorIndexDef("vec", cocoindex.VectorSimilarityMetric.COSINE_SIMILARITY)
            ],
        )

    return define


def corpus_texts() -> list[str]:
    return [p.read_text() for p in sorted(CORPUS.rglob("*.md*"))]


def populate(root: Path, count: int) -> None:
    texts = corpus_texts()
    for i in range(count):
        path = root / f"d{i // 500:02}" / f"doc{i:05}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<!-- copy {i} -->\n\n" + texts[i % len(texts)])


class Poller:
    def __init__(self, url: str, table: str) -> None:
        self.url, self.table = url, table
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(url))

    def has_marker(self, filename: str, marker: str) -> bool:
        """Looks up one file's rows by primary key (a LIKE over the whole table would
        take longer than the update being measured)."""
        rows = self.loop.run_until_complete(
            self.conn.fetch(f"SELECT text FROM {self.table} WHERE filename = $1", filename)
        )
        return any(marker in r["text"] for r in rows)

    def count_like(self, marker: str) -> int:
        return int(
            self.loop.run_until_complete(
                self.conn.fetchval(
                    f"SELECT count(DISTINCT filename) FROM {self.table} WHERE text LIKE $1",
                    f"%{marker}%",
                )
            )
        )

    def wait_for_file(self, filename: str, marker: str, timeout: float = 60.0) -> float:
        start = time.perf_counter()
        while not self.has_marker(filename, marker):
            if time.perf_counter() - start > timeout:
                raise TimeoutError(marker)
            time.sleep(0.002)
        return time.perf_counter() - start

    def wait_for(self, marker: str, expected: int = 1, timeout: float = 60.0) -> float:
        start = time.perf_counter()
        while self.count_like(marker) < expected:
            if time.perf_counter() - start > timeout:
                raise TimeoutError(marker)
            time.sleep(0.002)
        return time.perf_counter() - start

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return (
        f"p50 {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms, max {ms[-1]:.0f} ms (n={len(ms)})"
    )


def measure_latency(name: str, root: Path, real_model: bool, edits: int) -> list[float]:
    flow = cocoindex.open_flow(name, make_flow(root, real_model))
    flow.setup()
    flow.update()
    table = f"{name.lower()}__chunks"
    poller = Poller(get_context().database_url, table)
    samples = []
    files = sorted(root.rglob("*.md"))
    with cocoindex.FlowLiveUpdater(flow):
        time.sleep(0.5)
        for i in range(edits):
            path = files[(i * 7) % len(files)]
            marker = f"edit-{name}-{i}-{time.time_ns()}"
            text = path.read_text()
            # A one-paragraph edit: replace the first paragraph after the header comment.
            head, _, rest = text.partition("\n\n")
            path.write_text(f"{head}\n\nEdited paragraph {marker}.\n\n{rest}")
            t0 = time.perf_counter()
            poller.wait_for_file(path.relative_to(root).as_posix(), marker)
            samples.append(time.perf_counter() - t0)
            time.sleep(0.05)
    poller.close()
    flow.close()
    return samples


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--real-model-files", type=int, default=61)
    parser.add_argument("--skip-real-model", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="cocod-live-bench-"))
    cocoindex.init(cocoindex.Settings(state_dir=work / "state"))

    big = work / "big"
    populate(big, args.files)
    print(f"corpus: {args.files} files under {big}")
    tiny = measure_latency("LiveTiny", big, real_model=False, edits=args.edits)
    print(f"save-to-visible, tiny embedder, {args.files} files watched: {percentiles(tiny)}")

    flow = cocoindex.open_flow("LiveIdle", make_flow(big, real_model=False))
    flow.setup()
    flow.update()
    poller = Poller(get_context().database_url, "liveidle__chunks")
    with cocoindex.FlowLiveUpdater(flow):
        time.sleep(2.0)
        before_cpu, before_wall = cpu_seconds(), time.perf_counter()
        time.sleep(args.idle_seconds)
        idle = (cpu_seconds() - before_cpu) / (time.perf_counter() - before_wall) * 100
        print(f"idle CPU while watching {args.files} files: {idle:.2f}% of one core")

        files = sorted(big.rglob("*.md"))[: args.burst]
        marker = f"burst-{time.time_ns()}"
        t0 = time.perf_counter()
        for path in files:
            text = path.read_text()
            head, _, rest = text.partition("\n\n")
            path.write_text(f"{head}\n\nBurst {marker}.\n\n{rest}")
        written = time.perf_counter() - t0
        last = files[-1].relative_to(big).as_posix()
        poller.wait_for_file(last, marker, timeout=600)
        # Then every file (the count query is slow, so it runs once the last file is in).
        elapsed = poller.wait_for(marker, expected=len(files), timeout=600)
        print(
            f"burst: {len(files)} files rewritten in {written:.2f} s, all visible "
            f"{elapsed:.2f} s after the last write ({len(files) / (written + elapsed):.0f} files/s)"
        )
    poller.close()
    flow.close()

    if not args.skip_real_model:
        docs = work / "real"
        populate(docs, args.real_model_files)
        real = measure_latency("LiveModel", docs, real_model=True, edits=min(args.edits, 50))
        print(f"save-to-visible, real model, one-paragraph edit: {percentiles(real)}")
    cocoindex.stop()


if __name__ == "__main__":
    main()
