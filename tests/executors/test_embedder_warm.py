"""SentenceTransformerExecutor.warm() loads the real (bundled) model on the model thread,
so FunctionRunner.prepare() can load it before the first edit's pass needs it."""

from __future__ import annotations

import json
import threading
import time

import anyio
import numpy as np
import pytest

from cocod.executors import embedder

pytestmark = pytest.mark.anyio

MODEL = "all-MiniLM-L6-v2"


IDLE_S = 0.2


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def short_trim_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedder, "TRIM_IDLE_S", IDLE_S)


async def wait_for_trims(count: int) -> None:
    def poll() -> None:
        deadline = time.monotonic() + 30
        while embedder.heap_trims < count:
            assert time.monotonic() < deadline, "the idle trim never came"
            time.sleep(0.02)

    await anyio.to_thread.run_sync(poll)


async def test_warm_loads_the_model_on_the_model_thread() -> None:
    executor = embedder.SentenceTransformerExecutor(MODEL, None)
    await executor.warm()
    assert (MODEL, json.dumps({})) in embedder._models

    # With the model loaded, a warm-up anywhere else would return at once: one queued
    # behind work on the model thread waits for that work (torch runs on one thread).
    release = threading.Event()
    blocker = embedder._MODEL_THREAD.submit(release.wait, 60)
    try:
        with anyio.move_on_after(0.5) as scope:
            await executor.warm()
        assert scope.cancelled_caught, "warm() did not run on the model thread"
    finally:
        release.set()
    assert blocker.result(60)
    with anyio.fail_after(60):
        await executor.warm()

    (vector,) = await executor(["a sentence to embed"])
    assert vector.shape == (384,) and vector.dtype == np.float32


async def test_a_cpu_model_claims_the_cores_and_a_large_encode_trims_the_heap() -> None:
    from cocod.executors import cpu_claims

    executor = embedder.SentenceTransformerExecutor(MODEL, None)
    await executor.warm()
    # Split workers stand down beside it (tests/executors/test_split_processes.py).
    assert cpu_claims.cores_claimed()
    assert any(owner.startswith("model:") for owner in cpu_claims.claims())

    before = embedder.heap_trims
    await executor(["one edited paragraph"])
    await anyio.sleep(IDLE_S * 3)
    assert embedder.heap_trims == before, "a one-text encode (a live edit) trimmed"
    texts = [f"sentence number {i} about indexing" for i in range(embedder.TRIM_AFTER_TEXTS)]
    # Batches one after another (an initial load) do not trim between them: only once
    # the model thread has been idle.
    for _ in range(3):
        vectors = await executor(texts)
        assert len(vectors) == len(texts)
        assert embedder.heap_trims == before, "trimmed between back-to-back batches"
    if embedder._trim is not None:  # glibc
        await wait_for_trims(before + 1)
        await anyio.sleep(IDLE_S * 3)
        assert embedder.heap_trims == before + 1


async def test_an_encode_cancelled_before_it_ran_does_not_stop_the_trims() -> None:
    executor = embedder.SentenceTransformerExecutor(MODEL, None)
    await executor.warm()
    release = threading.Event()
    blocker = embedder._MODEL_THREAD.submit(release.wait, 60)
    try:
        with anyio.move_on_after(0.2) as scope:
            await executor(["queued behind the blocker, then cancelled"])
        assert scope.cancelled_caught
    finally:
        release.set()
    assert blocker.result(60)
    before = embedder.heap_trims
    texts = [f"sentence number {i} after a cancel" for i in range(embedder.TRIM_AFTER_TEXTS)]
    await executor(texts)
    assert embedder._queued == 0
    if embedder._trim is not None:  # glibc: the cancelled encode left no count behind
        await wait_for_trims(before + 1)


def test_the_cores_are_claimed_while_the_model_loads_and_released_if_it_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Split workers started during a load would stand down right after it, their memory
    in the peak for nothing: the claim starts with the load, and a failed load drops it."""
    from cocod.executors import cpu_claims

    monkeypatch.setattr(cpu_claims, "_claims", set())
    seen: list[bool] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(cpu_claims.cores_claimed())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # Arguments of their own: a fresh load of the bundled model, not the cached one.
        embedder.load_model(MODEL, {"device": "cpu", "cache_folder": None})
    finally:
        done.set()
        watcher.join()
    # Claimed for (nearly) the whole load, not only once it ended.
    assert seen and sum(seen) >= 0.8 * len(seen), "not claimed while the model loaded"
    assert cpu_claims.cores_claimed()

    monkeypatch.setattr(cpu_claims, "_claims", set())
    with pytest.raises(Exception):  # noqa: B017 - whatever the loader raises
        embedder.load_model("/nonexistent/model/folder", None)
    assert not cpu_claims.cores_claimed()
