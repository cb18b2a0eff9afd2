"""Model lanes: a large CPU encode split over single-threaded lanes gives the vectors one
encode would, in order, leaves the process's torch thread default as it was, and never
leaves a lane running after the call (an error included). Real bundled model."""

from __future__ import annotations

import concurrent.futures
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
