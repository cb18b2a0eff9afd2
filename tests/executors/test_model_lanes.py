"""Model lanes: a large CPU encode split over single-threaded lanes gives the vectors one
encode would, in order, batches texts of similar token counts with the longest first,
leaves the process's torch thread default as it was, and never leaves a lane running
after the call (an error included). Real bundled model."""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
from typing import Any

import numpy as np
import pytest

from cocod.executors.embedder import load_model
from cocod.executors.model_lanes import LANE_BATCH_SIZE, ModelLanes, plan_lanes

MODEL = "all-MiniLM-L6-v2"

TEXTS = [
    f"paragraph {i}: " + " ".join(["incremental indexing keeps vectors in sync"] * (1 + i % 5))
    for i in range(3 * LANE_BATCH_SIZE + 1)
]


def on_thread_with_budget(budget: int, fn: Any) -> Any:
    """Run ``fn`` on a fresh thread whose torch thread count is ``budget`` (the model
    thread's role), so the lanes are used on a machine of any size."""

    def run() -> Any:
        import torch

        torch.set_num_threads(budget)
        return fn()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def test_plan_lanes() -> None:
    assert plan_lanes(1) == (1, 1)
    assert plan_lanes(2) == (2, 1)
    assert plan_lanes(4) == (4, 1)
    assert plan_lanes(16) == (4, 4)


def test_lanes_give_the_vectors_of_one_encode_in_order() -> None:
    model = load_model(MODEL)
    expected = model.encode(TEXTS, batch_size=8, convert_to_numpy=True, show_progress_bar=False)
    lanes = ModelLanes()
    got = on_thread_with_budget(
        2, lambda: lanes.encode(model, TEXTS, 8, convert_to_numpy=True, show_progress_bar=False)
    )
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)

    import torch

    def lane_threads() -> int:
        return torch.get_num_threads()

    assert lanes._pool is not None and lanes._shape == (2, 1)
    assert lanes._pool.submit(lane_threads).result() == 1
    # The process default is the budget again: a thread that first runs torch now gets it.
    fresh: list[int] = []
    thread = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert fresh == [2]


class FailingOn:
    """The real model, but its encode raises for one text (a batch that fails)."""

    def __init__(self, model: Any, bad: str) -> None:
        self._model, self._bad = model, bad
        self.running = 0
        self._lock = threading.Lock()
        self.failed = threading.Event()

    def preprocess(self, texts: list[str]) -> Any:
        return self._model.preprocess(texts)

    def encode(self, texts: list[str], **kwargs: Any) -> Any:
        with self._lock:
            self.running += 1
        try:
            if self._bad in texts:
                self.failed.set()
                raise ValueError("this batch cannot be encoded")
            return self._model.encode(texts, **kwargs)
        finally:
            with self._lock:
                self.running -= 1


class Recording:
    """The real model, recording the batches its encode is given, in the order they start."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()

    def preprocess(self, texts: list[str]) -> Any:
        return self._model.preprocess(texts)

    def encode(self, texts: list[str], **kwargs: Any) -> Any:
        with self._lock:
            self.batches.append(list(texts))
        return self._model.encode(texts, **kwargs)


def test_batches_hold_similar_token_counts_and_the_longest_start_first() -> None:
    base = load_model(MODEL)
    # Characters and tokens disagree: "x x x" is a token per two characters, a long word
    # several characters per token. Sorted by characters, the batches would mix them.
    texts = [" ".join(["x"] * (8 * k)) for k in range(1, 9)]
    texts += [" ".join(["antidisestablishmentarianism"] * k) for k in range(1, 9)]
    counts = base.preprocess(texts)["attention_mask"].sum(dim=1).tolist()
    tokens = dict(zip(texts, counts, strict=True))
    by_chars = sorted(texts, key=len)
    assert sorted(texts, key=lambda t: tokens[t]) != by_chars, "the texts do not test the order"
    model = Recording(base)
    lanes = ModelLanes()
    got = on_thread_with_budget(2, lambda: lanes.encode(model, by_chars, 8))
    expected = base.encode(by_chars, batch_size=8, show_progress_bar=False)
    np.testing.assert_allclose(got, expected, atol=1e-5)

    assert sorted(len(b) for b in model.batches) == [LANE_BATCH_SIZE] * 4
    spans = sorted((min(tokens[t] for t in b), max(tokens[t] for t in b)) for b in model.batches)
    for (_, top), (bottom, _) in itertools.pairwise(spans):
        assert top <= bottom, f"batches of overlapping token counts: {spans}"
    longest = max(texts, key=lambda t: tokens[t])
    assert any(longest in b for b in model.batches[:2]), "the longest batch did not start first"


def test_a_failing_batch_raises_and_no_lane_runs_after_the_call() -> None:
    model = FailingOn(load_model(MODEL), TEXTS[LANE_BATCH_SIZE])
    lanes = ModelLanes()
    with pytest.raises(ValueError, match="cannot be encoded"):
        on_thread_with_budget(2, lambda: lanes.encode(model, TEXTS, 8))
    assert model.failed.is_set()
    assert model.running == 0, "a lane was still encoding after the call returned"


def test_few_texts_or_one_thread_encode_on_the_calling_thread() -> None:
    model = load_model(MODEL)
    lanes = ModelLanes()
    few = TEXTS[:LANE_BATCH_SIZE]
    on_thread_with_budget(2, lambda: lanes.encode(model, few, 8))
    on_thread_with_budget(1, lambda: lanes.encode(model, TEXTS, 8))
    assert lanes._pool is None, "lanes were started for a call that fits one batch"
