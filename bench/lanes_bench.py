"""Raw encode on cocod's model lanes against one encode at torch's own threading.

Why beside run.py: the lanes (cocod/executors/model_lanes.py) exist because of this
figure, and it needs no engine, no database and no CocoIndex. Both ways run in one
process, alternating round by round from the same driving thread (the role of the
embedder's model thread), so the machine's drift between runs cancels out.

    .venv/bin/python bench/lanes_bench.py --texts 160 --rounds 6

Chunk texts are 2,000-character windows of the repository's docs and the standard
library's sources, sorted by length as the engine sorts them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--texts", type=int, default=160)
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()

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
