"""How many documents cocod's `SplitRecursively` splits exactly as CocoIndex 0.3.39 does.

    .venv/bin/python bench/splitter_parity.py                # corpus + generated code samples
    .venv/bin/python bench/splitter_parity.py --show-diff 3  # print the first differing chunks

"Identical" means the same list of chunks: the same texts, the same character offsets and the
same start/end line and column.  CocoIndex runs in a subprocess of ``.venv-cocoindex`` (one for
the whole run: its ``SplitRecursively`` inside a ``transform_flow`` evaluated with ``.eval``,
which needs no database), so the two engines never share an interpreter.

Inputs, in groups:

* ``markdown``: the ``.md``/``.mdx`` files of ``../shared/corpus`` (or, without it, the
  repository's README.md and docs/*.md), split with ``language="markdown", chunk_size=2000,
  chunk_overlap=500`` (the benchmark corpus's settings).
* ``code:<language>``: for each language v0 splits along a syntax tree, the samples generated
  below (and the repository's own Python and TOML files), split with ``chunk_size=1000,
  min_chunk_size=300, chunk_overlap=300`` (v0's code_embedding example).

It prints ``identical files: X / N`` per group and writes all figures to
``bench/results/splitter_parity.json``.  Without ``.venv-cocoindex`` it says so and only checks
that cocod splits everything.  It is a benchmark: it exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitter_samples import code_samples  # bench/ is sys.path[0] when run as a script

from cocod.executors.splitter import RecursiveSplitter

REPO = Path(__file__).resolve().parents[1]

CORPUS = REPO.parent / "shared" / "corpus"
COCOINDEX_PYTHON = REPO / ".venv-cocoindex" / "bin" / "python"
RESULTS = REPO / "bench" / "results" / "splitter_parity.json"
MARKDOWN_CONFIG = {"chunk_size": 2000, "min_chunk_size": 1000, "chunk_overlap": 500}
CODE_CONFIG = {"chunk_size": 1000, "min_chunk_size": 300, "chunk_overlap": 300}

# Run by CocoIndex's interpreter: reads jobs as JSON on stdin, writes chunks as JSON.
_COCOINDEX_SCRIPT = r"""
import json, os, sys, typing
import cocoindex

@cocoindex.transform_flow()
def split(
    text: cocoindex.DataSlice[str],
    language: cocoindex.DataSlice[str],
    chunk_size: cocoindex.DataSlice[int],
    min_chunk_size: cocoindex.DataSlice[int],
    chunk_overlap: cocoindex.DataSlice[int],
) -> cocoindex.DataSlice[typing.Any]:
    return text.transform(
        cocoindex.functions.SplitRecursively(),
        language=language,
        chunk_size=chunk_size,
        min_chunk_size=min_chunk_size,
        chunk_overlap=chunk_overlap,
    )

out = []
for job in json.load(sys.stdin):
    table = split.eval(
        job["text"], job["language"], job["chunk_size"], job["min_chunk_size"],
        job["chunk_overlap"],
    )
    out.append([
        [k[0], k[1], v["text"], [v["start"]["line"], v["start"]["column"]],
         [v["end"]["line"], v["end"]["column"]]]
        for k, v in sorted(table.items())
    ])
with open(sys.argv[1], "w", encoding="utf-8") as f:
    json.dump(out, f)
os._exit(0)  # CocoIndex's own shutdown now and then garbles or drops what was written
"""


@dataclass(frozen=True)
class Job:
    group: str
    name: str
    text: str
    language: str
    config: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return {"text": self.text, "language": self.language, **self.config}


# A chunk as both sides report it: start, end (characters), text, (line, col), (line, col).
ChunkRow = list[Any]


def markdown_jobs() -> tuple[str, list[Job]]:
    """The corpus's markdown, or the repository's own docs when the corpus is absent."""
    if CORPUS.is_dir():
        paths = sorted(
            p for p in CORPUS.rglob("*") if p.suffix in (".md", ".mdx") and p.name != "README.md"
        )
        source = str(CORPUS)
        base = CORPUS
    else:
        paths = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
        source = "repository README.md and docs/ (../shared/corpus is absent)"
        base = REPO
    jobs = [
        Job("markdown", str(p.relative_to(base)), p.read_text("utf-8"), "markdown", MARKDOWN_CONFIG)
        for p in paths
    ]
    return source, jobs


# Random text from these pieces (separators of every level, markdown markers, CRLF, CJK
# punctuation, non-ASCII, Unicode spaces), split as plain text and as markdown with random
# sizes: the rules away from any real document's shape.
_RANDOM_PIECES = [
    *"abcdefgh  \n\n\t.,;:-!?#`",
    *["。", "，", "é", "😀", "—", "\u3000", "```\n", "## ", "\r\n", "\r", "- ", "1. ", "> "],
]


def random_jobs(count: int, seed: int = 7) -> list[Job]:
    rng = random.Random(seed)
    jobs = []
    for k in range(count):
        text = "".join(rng.choice(_RANDOM_PIECES) for _ in range(rng.randint(0, 400)))
        chunk_size = rng.randint(5, 120)
        min_size = rng.randint(0, chunk_size)
        overlap = rng.choice([0, 0, rng.randint(0, min_size)])
        language = ("", "markdown")[k % 2]
        config = {"chunk_size": chunk_size, "min_chunk_size": min_size, "chunk_overlap": overlap}
        jobs.append(Job(f"random:{language or 'plain'}", f"random-{k}", text, language, config))
    return jobs


def v0_oversize(rows: list[ChunkRow], chunk_size: int) -> bool:
    """Whether v0 emitted a chunk over ``chunk_size`` (cocod cuts those: a known difference)."""
    return any(len(row[2].encode("utf-8", "surrogatepass")) > chunk_size for row in rows)


def code_jobs() -> list[Job]:
    jobs = [
        Job(f"code:{language}", name, text, language, CODE_CONFIG)
        for language, name, text in code_samples()
    ]
    own = [*sorted((REPO / "cocod").glob("*.py"))[:12], REPO / "pyproject.toml"]
    for path in own:
        if path.is_file():
            language = "python" if path.suffix == ".py" else "toml"
            jobs.append(
                Job(
                    f"code:{language}",
                    str(path.relative_to(REPO)),
                    path.read_text("utf-8"),
                    language,
                    CODE_CONFIG,
                )
            )
    return jobs


def split_cocod(job: Job) -> list[ChunkRow]:
    chunks = RecursiveSplitter().split(
        job.text,
        job.config["chunk_size"],
        job.config["min_chunk_size"],
        job.config["chunk_overlap"],
        job.language,
    )
    return [
        [
            c.location[0],
            c.location[1],
            c.text,
            [c.start.line, c.start.column],
            [c.end.line, c.end.column],
        ]
        for c in chunks
    ]


def split_cocoindex(jobs: list[Job]) -> list[list[ChunkRow]] | None:
    if not COCOINDEX_PYTHON.exists():
        print(f"CocoIndex skipped: {COCOINDEX_PYTHON} is absent (bench/setup_cocoindex_venv.sh)")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "chunks.json"
        proc = subprocess.run(
            [str(COCOINDEX_PYTHON), "-c", _COCOINDEX_SCRIPT, str(out)],
            input=json.dumps([job.as_json() for job in jobs]),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0 or not out.exists():
            print(f"CocoIndex failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            return None
        result: list[list[ChunkRow]] = json.loads(out.read_text("utf-8"))
        return result


def first_difference(ours: list[ChunkRow], theirs: list[ChunkRow]) -> str:
    for k, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            ours_line = f"  cocod     {a[:2]} {a[2][:160]!r}"
            theirs_line = f"  cocoindex {b[:2]} {b[2][:160]!r}"
            return f"chunk {k}:\n{ours_line}\n{theirs_line}"
    return f"chunk counts differ: cocod {len(ours)}, cocoindex {len(theirs)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--show-diff", type=int, default=0, help="print N differing files")
    parser.add_argument("--group", default=None, help="only groups starting with this")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--random", type=int, default=400, help="random texts (0: none)")
    args = parser.parse_args()

    source, jobs = markdown_jobs()
    jobs += code_jobs()
    jobs += random_jobs(args.random)
    if args.group:
        jobs = [job for job in jobs if job.group.startswith(args.group)]
    started = time.perf_counter()
    ours = [split_cocod(job) for job in jobs]
    cocod_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = split_cocoindex(jobs)
    cocoindex_s = time.perf_counter() - started

    groups: dict[str, dict[str, Any]] = {}
    shown = 0
    for k, job in enumerate(jobs):
        entry = groups.setdefault(
            job.group, {"files": 0, "identical": 0, "v0_oversize": 0, "differing": []}
        )
        entry["files"] += 1
        if theirs is None:
            continue
        if ours[k] == theirs[k]:
            entry["identical"] += 1
        elif v0_oversize(theirs[k], job.config["chunk_size"]):
            entry["v0_oversize"] += 1
        else:
            entry["differing"].append(job.name)
            if shown < args.show_diff:
                shown += 1
                print(f"--- {job.group} {job.name}: {first_difference(ours[k], theirs[k])}")

    print(f"markdown from {source}")
    width = max(len(g) for g in groups)
    for name, entry in groups.items():
        figure = "?" if theirs is None else entry["identical"]
        line = f"{name:<{width}}  identical files: {figure} / {entry['files']}"
        if entry["v0_oversize"]:
            line += f" (+{entry['v0_oversize']} where v0 emits a chunk over chunk_size)"
        print(line)
    code = [e for g, e in groups.items() if g.startswith("code:")]
    # ``differing`` lists names; keep the JSON short for the random groups.
    for name, entry in groups.items():
        if name.startswith("random:"):
            entry["differing"] = len(entry["differing"])
    code_identical = sum(e["identical"] for e in code)
    code_files = sum(e["files"] for e in code)
    code_figure = "?" if theirs is None else code_identical
    print(f"{'code (all)':<{width}}  identical files: {code_figure} / {code_files}")
    print(f"split time: cocod {cocod_s:.2f} s, cocoindex {cocoindex_s:.2f} s (incl. start)")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "command": "bench/splitter_parity.py",
        "markdown_source": source,
        "markdown_config": MARKDOWN_CONFIG,
        "code_config": CODE_CONFIG,
        "cocoindex": None if theirs is None else "0.3.39",
        "groups": groups,
        "code_total": {"files": code_files, "identical": code_identical},
        "seconds": {"cocod": round(cocod_s, 3), "cocoindex": round(cocoindex_s, 3)},
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
