"""FunctionRunner.prepare(): the executor is created and warmed (a model loaded) before a
row needs it, once, off the event loop; the rows then use that same executor."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from cocod.engine.evaluator import FunctionRunner, RowMemo
from cocod.flow.specs import AnalyzedFunction, OpOptions
from cocod.flow.types import type_of_annotation

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Upper:
    """An executor with a synchronous warm-up (the way a model load would be)."""

    def __init__(self) -> None:
        self.warm_threads: list[threading.Thread] = []

    def warm(self) -> None:
        self.warm_threads.append(threading.current_thread())

    def __call__(self, text: str) -> str:
        return text.upper()


class _AsyncUpper:
    def __init__(self) -> None:
        self.warmed = 0

    async def warm(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.warmed += 1

    async def __call__(self, text: str) -> str:
        return text.upper()


def _runner(create: Any, *, is_async: bool = False) -> tuple[FunctionRunner, list[Any]]:
    created: list[Any] = []

    def create_executor() -> Any:
        executor = create()
        created.append(executor)
        return executor

    function = AnalyzedFunction(
        kind="Upper",
        spec_json={},
        output_type=type_of_annotation(str),
        options=OpOptions(),
        create_executor=create_executor,
        is_async=is_async,
    )
    return FunctionRunner(function, anyio.CapacityLimiter(2)), created


async def test_prepare_creates_and_warms_once_in_a_worker_thread_and_rows_reuse_it() -> None:
    runner, created = _runner(_Upper)
    loop_thread = threading.current_thread()
    async with anyio.create_task_group() as tg:  # concurrent callers: still once
        for _ in range(3):
            tg.start_soon(runner.prepare)
    await runner.prepare()
    (executor,) = created
    assert len(executor.warm_threads) == 1
    assert executor.warm_threads[0] is not loop_thread  # never blocks the event loop
    assert await runner.run([(["abc"], {})], RowMemo(store=None)) == ["ABC"]
    assert created == [executor]


async def test_an_async_warm_is_awaited() -> None:
    runner, created = _runner(_AsyncUpper, is_async=True)
    await runner.prepare()
    await runner.prepare()
    (executor,) = created
    assert executor.warmed == 1
    assert await runner.run([(["x"], {})], RowMemo(store=None)) == ["X"]


async def test_an_executor_without_warm_is_only_created() -> None:
    runner, created = _runner(lambda: str.upper)
    await runner.prepare()
    assert len(created) == 1
    assert await runner.run([(["y"], {})], RowMemo(store=None)) == ["Y"]
    assert len(created) == 1


async def test_a_failing_warm_raises_and_a_later_prepare_tries_again() -> None:
    class Failing(_Upper):
        def warm(self) -> None:
            super().warm()
            if len(self.warm_threads) == 1:
                raise OSError("model files not found")

    runner, created = _runner(Failing)
    with pytest.raises(OSError, match="model files not found"):
        await runner.prepare()
    await runner.prepare()
    (executor,) = created
    assert len(executor.warm_threads) == 2
