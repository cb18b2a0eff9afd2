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
"""

from __future__ import annotations

import argparse
import cProfile
import sysconfig
import time
from pathlib import Path

from corpus import builtin_bases  # bench/ is sys.path[0] when run as a script

from cocod.executors.splitter import RecursiveSplitter

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="write a cProfile of one round here")
    args = parser.parse_args()
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
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(measure, splitter, texts, language, config)
            profiler.dump_stats(f"{args.profile}.{name}")


if __name__ == "__main__":
    main()
