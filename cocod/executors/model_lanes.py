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

Within a call the lanes take batches of texts with similar token counts, the longest
first (:meth:`ModelLanes._batches`). Against batches by characters in order, as before,
with ``bench/lanes_bench.py --calls`` (engine-sized calls of 24-106 chunk texts of mixed
length, six alternating rounds, the extra tokenizing of about 70 ms per 106 texts
included): 1.055 (its /tmp prototype), 1.16 and 1.04 times as fast. In an initial index
of 1,000 files of the benchmark's corpus it made no difference above the run-to-run
noise: 185.0 and 200.4 s against 187.6 and 178.4 s, alternating.

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
        if lanes < 2 or len(texts) <= LANE_BATCH_SIZE:
            return model.encode(list(texts), batch_size=alone_batch_size, **encode_kwargs)
        batches = self._batches(model, texts)
        pool = self._pool_for(lanes, per_lane)
        try:
            futures = [
                pool.submit(_encode_batch, model, [texts[i] for i in batch], encode_kwargs)
                for batch in batches
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
        vectors = np.concatenate([np.asarray(r) for r in results])
        in_caller_order = np.empty_like(vectors)
        in_caller_order[np.concatenate(batches)] = vectors
        return in_caller_order

    def _batches(self, model: Any, texts: Sequence[str]) -> list[list[int]]:
        """The call's batches (indexes into ``texts``) in the order they are submitted:
        similar token counts together, the longest first, since the call ends when its
        last batch does and a short last batch leaves the other lanes the least waiting.
        ``bench/lanes_bench.py --calls`` overrides it with the character order."""
        order = _by_token_length(model, texts)
        batches = [order[i : i + LANE_BATCH_SIZE] for i in range(0, len(order), LANE_BATCH_SIZE)]
        return batches[::-1]

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


def _by_token_length(model: Any, texts: Sequence[str]) -> list[int]:
    """Indexes of ``texts`` from fewest tokens to most, as the model will see them.

    Why tokens and not characters: a batch is padded to its longest member, and code,
    prose and markup turn the same number of characters into very different numbers of
    tokens. Measured on 2,000 chunk texts of the docs and the standard library at batch 4:
    sorted by characters, the padded batches held 4.3% more tokens than the texts; sorted
    by tokens, 0.1%. Tokenizing costs far less than a forward pass.

    Tokenized with the model's own settings (``preprocess``), which also applies them to
    the tokenizer here, before the lanes start: the tokenizer applies its truncation and
    padding settings when they change, and two lanes doing that at once would collide in
    the Rust tokenizer ("Already borrowed").
    """
    tokenize = getattr(model, "preprocess", None) or model.tokenize  # older releases: tokenize
    features = tokenize(list(texts))
    mask = features.get("attention_mask") if hasattr(features, "get") else None
    if mask is None:
        return sorted(range(len(texts)), key=lambda i: len(texts[i]))
    lengths = mask.sum(dim=1).tolist()
    return sorted(range(len(texts)), key=lambda i: (lengths[i], len(texts[i])))
