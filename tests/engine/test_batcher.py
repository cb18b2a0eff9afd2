"""The Batcher merges concurrent calls with no task of its own, and survives its leader."""

from __future__ import annotations

import anyio
import pytest

from cocod.engine.batching import Batcher

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_concurrent_submits_share_one_batch() -> None:
    calls: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        calls.append(items)
        return [i * 10 for i in items]

    batcher = Batcher(run, max_batch_size=None)
    results: dict[int, list[int]] = {}

    async def submit(i: int) -> None:
        results[i] = await batcher.submit([i, i + 100])

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(submit, i)
    assert len(calls) == 1 and sorted(calls[0]) == sorted([*range(5), *range(100, 105)])
    assert results == {i: [i * 10, (i + 100) * 10] for i in range(5)}


async def test_batches_respect_the_size_limit_and_errors_reach_their_submitters() -> None:
    async def run(items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("thirteen")
        return items

    batcher = Batcher(run, max_batch_size=2)
    outcomes: dict[int, object] = {}

    async def submit(i: int) -> None:
        try:
            outcomes[i] = await batcher.submit([i])
        except ValueError as e:
            outcomes[i] = str(e)

    async with anyio.create_task_group() as tg:
        for i in (1, 2, 13, 4):
            tg.start_soon(submit, i)
    assert outcomes == {1: [1], 2: [2], 13: "thirteen", 4: "thirteen"}
    assert await batcher.submit([5]) == [5]


async def test_a_cancelled_leader_hands_its_batch_to_a_waiter() -> None:
    release = anyio.Event()
    started = anyio.Event()
    calls: list[list[str]] = []

    async def run(items: list[str]) -> list[str]:
        calls.append(items)
        started.set()
        if len(calls) == 1:
            await release.wait()  # the first batch never finishes: its leader is cancelled
        return [s.upper() for s in items]

    batcher = Batcher(run, max_batch_size=None)
    got: list[list[str]] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            leader = anyio.CancelScope()

            async def lead() -> None:
                with leader:
                    await batcher.submit(["a"])

            async def follow() -> None:
                got.append(await batcher.submit(["b"]))

            tg.start_soon(lead)
            tg.start_soon(follow)
            await started.wait()
            leader.cancel()
    assert got == [["B"]]
    assert calls[0] == ["a", "b"] and "b" in calls[1]


async def test_a_leader_returns_once_its_own_inputs_are_done() -> None:
    events: list[str] = []
    first_running = anyio.Event()
    finish_first = anyio.Event()

    async def run(items: list[str]) -> list[str]:
        events.append(f"run {items}")
        if items == ["a"]:
            first_running.set()
            await finish_first.wait()
        return items

    batcher = Batcher(run, max_batch_size=None)

    async def submit(item: str) -> None:
        await batcher.submit([item])
        events.append(f"{item} done")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, "a")
            await first_running.wait()
            tg.start_soon(submit, "b")  # queued while a's batch runs
            await anyio.sleep(0.05)
            finish_first.set()
    # "a" did not stay to run "b"'s batch: "b" led its own.
    assert events == ["run ['a']", "a done", "run ['b']", "b done"]
