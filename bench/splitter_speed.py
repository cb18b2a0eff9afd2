"""How fast `SplitRecursively` splits: chunks per CPU-second on markdown and on Python code.

    .venv/bin/python bench/splitter_speed.py              # both groups, 3 rounds each
    .venv/bin/python bench/splitter_speed.py --rounds 5 --profile /tmp/split.prof

Why CPU time: the machine is shared, so wall-clock figures drift with other people's work;
``time.process_time`` counts only this process.  Inputs:

* ``markdown``: the ``.md``/``.mdx`` files of ``../shared/corpus`` when present (the corpus the
  issues quote), else the repository's README.md and docs/*.md; ``chunk_size=2000,
  min_chunk_size=1000, chunk_overlap=500`` (the engine benchmark's settings).
* ``bench-md``: the engine benchmark's built-in corpus bases (``bench/corpus.py``: docs, the
  standard library's docstrings as markdown and its sources in fenced blocks), the first 400,
  split as markdown with the markdown settings.
* ``python``: the first 80 top-level modules of the running interpreter's standard library
  (sorted by name), ``chunk_size=1000, min_chunk_size=300, chunk_overlap=300`` (v0's
  code_embedding example).

The best round of each group is reported (the least disturbed by other load).  It is a
benchmark: it exits 0 whatever the figures.

``--processes N`` also splits each group from 8 threads the way the engine does during an
initial index (``cocod.executors.splitting.processes``, N worker processes, started and
warmed up first), and prints chunks per *wall* second beside the same threads splitting
in this process (the GIL makes that about one core): the gain from the workers.  Wall
time depends on the machine's other load, so compare the two lines of one run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import cProfile
import sysconfig
import time
from pathlib import Path

from corpus import builtin_bases  # bench/ is sys.path[0] when run as a script

from cocod.executors.splitter import RecursiveSplitter
from cocod.executors.splitting.processes import SplitProcesses

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
MARKDOWN_CONFIG = {"chunk_size": 2000, "min_chunk_size": 1000, "chunk_overlap": 500}
CODE_CONFIG = {"chunk_size": 1000, "min_chunk_size": 300, "chunk_overlap": 300}


def markdown_texts() -> list[str]:
    if CORPUS.is_dir():
        paths = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".md", ".mdx"))
    else:
        paths = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return [p.read_text(encoding="utf-8") for p in paths]


def bench_corpus_texts(limit: int = 400) -> list[str]:
    return [base.text for base in builtin_bases()[:limit]]


def python_texts(limit: int = 80) -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [p.read_text(encoding="utf-8") for p in sorted(stdlib.glob("*.py"))[:limit]]


def measure(
    splitter: RecursiveSplitter, texts: list[str], language: str, config: dict[str, int]
) -> tuple[int, float]:
    """Chunks made and CPU seconds spent splitting ``texts`` once."""
    chunks = 0
    began = time.process_time()
    for text in texts:
        chunks += len(splitter.split(text, language=language, **config))
    return chunks, time.process_time() - began


def measure_wall(
    splitter: RecursiveSplitter,
    texts: list[str],
    language: str,
    config: dict[str, int],
    processes: SplitProcesses | None,
) -> tuple[int, float]:
    """Chunks made and wall seconds splitting ``texts`` from 8 threads, through
    ``processes`` when given (else in the threads)."""

    def one(text: str) -> int:
        request = ((), text, config["chunk_size"], config["min_chunk_size"],
                   config["chunk_overlap"], language)  # fmt: skip
        if processes is None:
            return len(splitter.split_spans(*request[1:]))
        return len(processes.split(request, lambda: splitter.split_spans(*request[1:])))

    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        chunks = sum(pool.map(one, texts))
    return chunks, time.perf_counter() - began


def warm_up(processes: SplitProcesses, texts: list[str], language: str) -> None:
    """Overlapping splits until every worker has started and answered."""
    splitter = RecursiveSplitter()
    deadline = time.monotonic() + 60
    while processes.workers < processes.size and time.monotonic() < deadline:
        measure_wall(splitter, texts[:16], language, MARKDOWN_CONFIG, processes)
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="write a cProfile of one round here")
    parser.add_argument(
        "--processes", type=int, default=0, help="also split via N worker processes (wall)"
    )
    args = parser.parse_args()
    processes = SplitProcesses(args.processes) if args.processes else None
    splitter = RecursiveSplitter()
    groups = [
        ("markdown", markdown_texts(), "markdown", MARKDOWN_CONFIG),
        ("bench-md", bench_corpus_texts(), "markdown", MARKDOWN_CONFIG),
        ("python", python_texts(), "python", CODE_CONFIG),
    ]
    for name, texts, language, config in groups:
        size = sum(len(t.encode("utf-8")) for t in texts)
        best = float("inf")
        chunks = 0
        for _ in range(args.rounds):
            chunks, spent = measure(splitter, texts, language, config)
            best = min(best, spent)
        rate = chunks / best if best > 0 else float("inf")
        print(
            f"{name:8s} {len(texts):3d} files {size / 1e6:5.2f} MB {chunks:5d} chunks "
            f"{best:6.3f} CPU-s  {rate:8.0f} chunks/CPU-s  {size / best / 1e6:5.2f} MB/CPU-s"
        )
        if processes is not None:
            warm_up(processes, texts, language)
            walls: dict[str, float] = {"threads": float("inf"), "workers": float("inf")}
            for _ in range(args.rounds):  # alternating, best of each
                for how, via in (("threads", None), ("workers", processes)):
                    chunks, spent = measure_wall(splitter, texts, language, config, via)
                    walls[how] = min(walls[how], spent)
            print(
                f"{'':8s} 8 threads: {chunks / walls['threads']:8.0f} chunks per wall-s in this "
                f"process, {chunks / walls['workers']:8.0f} via {processes.size} worker "
                f"processes ({walls['threads'] / walls['workers']:.2f}x)"
            )
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(measure, splitter, texts, language, config)
            profiler.dump_stats(f"{args.profile}.{name}")
    if processes is not None:
        processes.close()


if __name__ == "__main__":
    main()
