"""Raw encode on cocod's model lanes against one encode at torch's own threading.

Why beside run.py: the lanes (cocod/executors/model_lanes.py) exist because of this
figure, and it needs no engine, no database and no CocoIndex. Both ways run in one
process, alternating round by round from the same driving thread (the role of the
embedder's model thread), so the machine's drift between runs cancels out.

    .venv/bin/python bench/lanes_bench.py --texts 160 --rounds 6
    .venv/bin/python bench/lanes_bench.py --calls --rounds 6

Chunk texts are 2,000-character windows of the repository's docs and the standard
library's sources, sorted by length as the engine sorts them. ``--calls`` instead runs
calls the size of the engine's (24-106 texts) on windows cut to mixed lengths, through
the lanes as they batch (by token count, longest first) and through lanes that batch by
characters in order, as they did before.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import random
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def chunk_texts(count: int) -> list[str]:
    sources = sorted((ROOT / "docs").rglob("*.md"))
    sources += sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    texts: list[str] = []
    for path in sources:
        text = path.read_text(errors="replace")
        texts += [text[i : i + 2000] for i in range(0, len(text) - 2000, 1700)]
        if len(texts) >= count:
            break
    return sorted(texts[:count], key=len)


CALL_SIZES = [24, 40, 60, 80, 106, 50]
"""Texts per embed call, from the range measured in a 1,000-file initial index."""


def mixed_calls() -> list[list[str]]:
    """Engine-sized calls of chunk windows cut to mixed lengths (seeded), each sorted by
    characters as the embedder sorts it."""
    rng = random.Random(1)
    texts = [t[: rng.choice([300, 800, 1200, 2000, 2000])] for t in chunk_texts(800)]
    rng.shuffle(texts)
    calls, start = [], 0
    for size in CALL_SIZES:
        calls.append(sorted(texts[start : start + size], key=len))
        start += size
    return calls


def calls_main(rounds: int) -> None:
    from cocod.executors.embedder import CPU_BATCH_SIZE, load_model
    from cocod.executors.model_lanes import LANE_BATCH_SIZE, ModelLanes

    class CharacterOrderLanes(ModelLanes):
        """The lanes before token ordering: batches by characters, submitted in order."""

        def _batches(self, model: Any, texts: Sequence[str]) -> list[list[int]]:
            model.preprocess([texts[0]])  # applies the tokenizer's settings before the lanes
            return [
                list(range(i, min(i + LANE_BATCH_SIZE, len(texts))))
                for i in range(0, len(texts), LANE_BATCH_SIZE)
            ]

    model = load_model("all-MiniLM-L6-v2")
    calls = mixed_calls()
    count = sum(len(c) for c in calls)
    ways = {
        "by tokens, longest first": ModelLanes(),
        "by characters, in order": CharacterOrderLanes(),
    }
    driver = concurrent.futures.ThreadPoolExecutor(1)  # as the embedder's model thread

    def run(lanes: ModelLanes) -> float:
        t0 = time.perf_counter()
        for call in calls:
            lanes.encode(model, call, CPU_BATCH_SIZE, show_progress_bar=False)
        return count / (time.perf_counter() - t0)

    for lanes in ways.values():  # warm-up
        driver.submit(
            lanes.encode, model, calls[0], CPU_BATCH_SIZE, show_progress_bar=False
        ).result()
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(rounds):
        for name in list(ways) if r % 2 == 0 else list(reversed(ways)):
            rates[name].append(driver.submit(run, ways[name]).result())
    print(f"{len(calls)} calls of {CALL_SIZES} texts of mixed length, {rounds} alternating rounds")
    for name, values in rates.items():
        runs = " ".join(f"{v:.1f}" for v in values)
        print(f"{name:<25} median {statistics.median(values):6.2f} texts/s   ({runs})")
    first, second = (statistics.median(v) for v in rates.values())
    print(f"by tokens / by characters: {first / second:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--texts", type=int, default=160)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--calls", action="store_true", help="token order against character order")
    args = p.parse_args()
    if args.calls:
        calls_main(args.rounds)
        return

    import torch

    from cocod.executors.embedder import CPU_BATCH_SIZE, load_model
    from cocod.executors.model_lanes import LANE_BATCH_SIZE, ModelLanes, plan_lanes

    model = load_model("all-MiniLM-L6-v2")
    texts = chunk_texts(args.texts)
    lanes = ModelLanes()
    driver = concurrent.futures.ThreadPoolExecutor(1)  # as the embedder's model thread

    def one_encode() -> None:
        model.encode(texts, batch_size=CPU_BATCH_SIZE, show_progress_bar=False)

    def on_lanes() -> None:
        lanes.encode(model, texts, CPU_BATCH_SIZE, show_progress_bar=False)

    ways: dict[str, Callable[[], None]] = {"one encode": one_encode, "lanes": on_lanes}
    for fn in ways.values():  # warm-up: first-call costs out of the rounds
        driver.submit(fn).result()
    budget = driver.submit(torch.get_num_threads).result()
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(args.rounds):
        for name in list(ways) if r % 2 == 0 else list(reversed(ways)):
            t0 = time.perf_counter()
            driver.submit(ways[name]).result()
            rates[name].append(len(texts) / (time.perf_counter() - t0))
    shape = plan_lanes(budget)
    print(
        f"{len(texts)} texts, {args.rounds} alternating rounds; torch threads {budget}, "
        f"one encode at batch {CPU_BATCH_SIZE}; lanes {shape[0]} x {shape[1]} thread(s) "
        f"at batch {LANE_BATCH_SIZE}"
    )
    for name, values in rates.items():
        runs = " ".join(f"{v:.1f}" for v in values)
        print(f"{name:<11} median {statistics.median(values):6.2f} texts/s   ({runs})")
    gain = statistics.median(rates["lanes"]) / statistics.median(rates["one encode"])
    print(f"lanes / one encode: {gain:.2f}")


if __name__ == "__main__":
    main()
