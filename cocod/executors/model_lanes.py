"""A CPU encode of many texts runs as whole batches side by side, one core each.

Why: torch parallelises each operation of a forward pass across its intra-op threads
and joins them at the end of it. A small model such as all-MiniLM-L6-v2 runs many short
operations per batch, and every join leaves a core waiting for the slowest share. Whole
batches on single-threaded lanes keep each core busy from one operation to the next.
Measured on 2 cores with ``bench/lanes_bench.py`` (all-MiniLM-L6-v2, 160 chunk texts of
up to 2,000 characters, six alternating rounds in one process): two lanes of one thread
at batch 4 against one encode at torch's 2 threads at batch 8, medians 1.16, 1.05, 1.06,
0.95 and 1.07 times as fast in five runs (the first with its prototype); single rounds
vary from 17 to 24 texts/s. In an initial index of 1,000 files: 180 s against 187 s (one
clean run each), and a peak of 626-630 MB against 650-680 (four runs each). Batch 8 per
lane was no faster and peaked about 90 MB higher, hence :data:`LANE_BATCH_SIZE`.

A call with fewer than two batches (a live edit's few texts) runs on the calling thread
at the whole thread budget instead: on a lane it would get one thread of the budget.

Thread counts are per thread: torch's OpenMP runtime keeps the count a thread last set
(a lane's 1 stays 1 while the caller keeps its budget), but ``torch.set_num_threads``
also sets the process-wide default that threads read on their first operation. So the
caller restores that default after each dispatch: code that first runs torch later (a
benchmark's raw encode on the main thread) gets the budget, not a lane's count.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from typing import Any

import numpy as np

LANE_BATCH_SIZE = 4
"""Texts per forward pass on a lane (see the module docstring for the measurement)."""

MAX_LANES = 4
"""At most this many lanes, each then with ``budget // lanes`` threads: every lane holds
one batch's activations at a time, so lanes cost memory that threads do not."""


def plan_lanes(budget: int) -> tuple[int, int]:
    """(lanes, threads per lane) for a budget of compute threads; one lane means none."""
    lanes = max(1, min(budget, MAX_LANES))
    return lanes, max(1, budget // lanes)


class ModelLanes:
    """Single-threaded (or few-threaded) worker threads that encode whole batches.

    Used from one thread at a time (the embedder's model thread), which waits for every
    batch of a call before it returns, so no lane runs between calls.
    """

    def __init__(self) -> None:
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._shape = (1, 1)

    def encode(
        self, model: Any, texts: Sequence[str], alone_batch_size: int, **encode_kwargs: Any
    ) -> Any:
        """Vectors of ``texts`` (in order) as one array, encoded by ``model.encode``;
        ``alone_batch_size`` is the batch when the call runs on this thread alone."""
        import torch

        budget = torch.get_num_threads()  # this thread's count: the embed thread budget
        lanes, per_lane = plan_lanes(budget)
        batches = [texts[i : i + LANE_BATCH_SIZE] for i in range(0, len(texts), LANE_BATCH_SIZE)]
        if lanes < 2 or len(batches) < 2:
            return model.encode(list(texts), batch_size=alone_batch_size, **encode_kwargs)
        # The tokenizer applies its padding and truncation settings on its first call and
        # only when they change after; two lanes applying them at once would collide in
        # the Rust tokenizer ("Already borrowed"), so the first call happens here.
        tokenize = getattr(model, "preprocess", None) or model.tokenize  # older releases: tokenize
        tokenize([texts[0]])
        pool = self._pool_for(lanes, per_lane)
        try:
            futures = [
                pool.submit(_encode_batch, model, list(batch), encode_kwargs) for batch in batches
            ]
            try:
                results = [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                concurrent.futures.wait(futures)  # none may still run after the call
                raise
        finally:
            torch.set_num_threads(budget)  # the default a lane's initializer changed
        return np.concatenate([np.asarray(r) for r in results])

    def _pool_for(self, lanes: int, per_lane: int) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None or self._shape != (lanes, per_lane):
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=lanes,
                thread_name_prefix="cocod-model-lane",
                initializer=_set_threads,
                initargs=(per_lane,),
            )
            self._shape = (lanes, per_lane)
        return self._pool


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _encode_batch(model: Any, batch: list[str], encode_kwargs: dict[str, Any]) -> Any:
    return model.encode(batch, batch_size=len(batch), **encode_kwargs)
