"""Hint lookup benchmark: what a burst of change hints costs the tracking lookup.

A pass over hinted keys (watcher events) first loads the stored ordinals of those keys and
of every tracked key under them, with ``PostgresStateStore.load_ordinals(source_id,
near_keys=...)``. That lookup used to filter the source's whole tracking once per hint,
so its cost was keys × tracked rows. Issue 9 measured it before the change: **1,000 hinted
keys took 3.9 s and 16,000 took 44 s** (and after ``touch`` of 50,000 files an edit
elsewhere took 111 s to show). Since then each hint is two range scans of the tracking
primary key (the key itself, and the keys under it as a folder), sent in chunks of
``HINTS_PER_QUERY`` hints per query, so the cost follows the number of hints.

What it does:

* starts the embedded Postgres in a fresh temporary state directory
  (:func:`cocod.storage.embedded.start_embedded_postgres`) and stops it at the end;
* creates the internal tables and fills ``cocod.tracking`` for one flow and one source with
  ``--rows`` rows (default 50,000) laid out like a source tree, ``dNN/sNN/fNNNNNN.md``
  (100 top folders, 10 subfolders each), plus the same number of rows of a second source
  that the lookups must skip; then ``ANALYZE``;
* times ``load_ordinals(source_id, near_keys=hints)`` for each ``--hints`` count (default
  1,000, 16,000 and 50,000): the hints are tracked file keys in random order (fixed seed);
  a count over ``--rows`` adds keys that are not tracked (new files), as a burst of
  creations would;
* times 10 folder hints (``d00`` … ``d09``: a folder deleted or moved away is one hint that
  stands for every tracked key under it, a tenth of the source here);
* times a full load (``near_keys=None``) for comparison;
* prints the median and minimum of ``--repeats`` runs (default 5) and the rows returned.

It is a benchmark, not a test: it prints figures and exits 0 unless the store raises.
It finishes in well under 2 minutes on a shared 2-core machine with the defaults.

Run: ``.venv/bin/python bench/hint_lookup_bench.py [--rows 50000] [--hints 1000,16000,50000]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from cocod.logs import configure_logging
from cocod.storage import internal_schema, state
from cocod.storage.embedded import start_embedded_postgres
from cocod.storage.pool import open_pool

SCHEMA = "cocod"
FLOW_ID = 1
SOURCE_ID = 1
OTHER_SOURCE_ID = 2
SEED = 9


def tracked_keys(rows: int) -> list[str]:
    """Keys as a LocalFile scan gives them: relative paths in a two-level folder tree."""
    return [f"d{i % 100:02d}/s{(i // 100) % 10}/f{i:06d}.md" for i in range(rows)]


def hint_keys(keys: Sequence[str], count: int) -> list[str]:
    rng = random.Random(SEED + count)
    hints = rng.sample(list(keys), min(count, len(keys)))
    hints += [f"new/f{i:06d}.md" for i in range(count - len(hints))]
    return hints


async def fill_tracking(conn: Any, keys: Sequence[str]) -> None:
    now_ns = time.time_ns()
    records: list[tuple[Any, ...]] = [
        (
            FLOW_ID,
            source_id,
            key.encode("utf-8", "surrogateescape"),
            now_ns - i,
            1000 + i % 5000,
            b"c" * 16,
            b"l" * 16,
            "{}",
            [],
            "{}",
        )
        for source_id in (SOURCE_ID, OTHER_SOURCE_ID)
        for i, key in enumerate(keys)
    ]
    await conn.copy_records_to_table(
        "tracking",
        schema_name=SCHEMA,
        columns=[
            "flow_id",
            "source_id",
            "source_key",
            "ordinal_mtime_ns",
            "ordinal_size",
            "content_fp",
            "logic_fp",
            "target_keys",
            "memo_keys",
            "uuids",
        ],
        records=records,
    )
    await conn.execute(f"ANALYZE {SCHEMA}.tracking")


async def timed(
    run: Callable[[], Awaitable[dict[str, Any]]], repeats: int
) -> tuple[list[float], int]:
    samples: list[float] = []
    found = 0
    for _ in range(repeats):
        start = time.perf_counter()
        result = await run()
        samples.append(time.perf_counter() - start)
        found = len(result)
    return samples, found


def row(label: str, samples: list[float], found: int) -> str:
    med, low = statistics.median(samples), min(samples)
    return f"| {label} | {found:,} | {med * 1000:,.1f} | {low * 1000:,.1f} |"


async def run_bench(uri: str, rows: int, hint_counts: list[int], repeats: int) -> list[str]:
    # A plain connection for the fill: COPY needs the driver's binary jsonb codec, which
    # the pool's connections replace with their JSON text codec.
    conn = await asyncpg.connect(uri)
    try:
        await internal_schema.ensure_internal_schema(conn, SCHEMA)
        keys = tracked_keys(rows)
        start = time.perf_counter()
        await fill_tracking(conn, keys)
        fill_s = time.perf_counter() - start
    finally:
        await conn.close()
    pool = await open_pool(uri, max_size=2)
    try:
        store = state.PostgresStateStore(pool, SCHEMA, FLOW_ID, {})
        await store.load_ordinals(SOURCE_ID, keys[:100])  # warm the connection and plan
        lines = [
            f"tracked rows: {rows:,} in source {SOURCE_ID} (+ {rows:,} in source "
            f"{OTHER_SOURCE_ID}), filled in {fill_s:.1f} s; {repeats} runs each; "
            f"{state.HINTS_PER_QUERY:,} hints per query",
            "",
            "| lookup | rows returned | median ms | min ms |",
            "| --- | ---: | ---: | ---: |",
        ]
        for count in hint_counts:
            hints = hint_keys(keys, count)

            async def hinted(hints: list[str] = hints) -> dict[str, Any]:
                return await store.load_ordinals(SOURCE_ID, near_keys=hints)

            samples, found = await timed(hinted, repeats)
            lines.append(row(f"{count:,} hinted keys", samples, found))

        folders = [f"d{i:02d}" for i in range(10)]

        async def by_folder() -> dict[str, Any]:
            return await store.load_ordinals(SOURCE_ID, near_keys=folders)

        samples, found = await timed(by_folder, repeats)
        lines.append(row("10 hinted folders (every key under them)", samples, found))

        async def full() -> dict[str, Any]:
            return await store.load_ordinals(SOURCE_ID)

        samples, found = await timed(full, repeats)
        lines.append(row("full load (no hints)", samples, found))
        return lines
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="tracked rows (default 50000)")
    parser.add_argument(
        "--hints", default="1000,16000,50000", help="comma-separated hint counts to time"
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs per lookup (median, min)")
    args = parser.parse_args(argv)
    hint_counts = [int(h.replace("_", "")) for h in args.hints.split(",") if h.strip()]
    if args.rows < 1 or args.repeats < 1 or not hint_counts or min(hint_counts) < 1:
        parser.error("--rows, --repeats and every --hints count must be at least 1")
    configure_logging("warning")
    work = Path(tempfile.mkdtemp(prefix="cocod-hint-bench-"))
    started = time.perf_counter()
    server = start_embedded_postgres(work / "state")
    try:
        print(f"embedded Postgres up in {time.perf_counter() - started:.1f} s", flush=True)
        lines = anyio.run(run_bench, server.uri, args.rows, hint_counts, args.repeats)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))
    print(f"\ntotal {time.perf_counter() - started:.1f} s (load {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
