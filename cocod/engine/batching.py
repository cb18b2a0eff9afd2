"""Results awaited across tasks, and batching of concurrent calls, with anyio only.

:class:`Promise` is a one-shot result; :class:`Batcher` merges the inputs of calls made
concurrently by many evaluations (model encodes, memo lookups) into batches, without a
task of its own, so nothing outlives the callers' task groups.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

_T = TypeVar("_T")


class Promise(Generic[_T]):
    """A result some other task will provide: set once, awaited by any number of tasks.

    The event is made only when a task has to wait: most promises (a memo key per chunk)
    are set before anyone awaits them, and an event per chunk was measurable.
    """

    __slots__ = ("_done", "_error", "_event", "_value")

    def __init__(self) -> None:
        self._done = False
        self._event: anyio.Event | None = None
        self._value: _T | None = None
        self._error: BaseException | None = None

    @property
    def is_done(self) -> bool:
        return self._done

    def _finish(self) -> None:
        self._done = True
        if self._event is not None:
            self._event.set()

    def set_result(self, value: _T) -> None:
        self._value = value
        self._finish()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._finish()

    async def wait(self) -> _T:
        if not self._done:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


class Batcher:
    """Merges batch calls from concurrent evaluations into batches of ``max_batch_size``.

    No background task: the first submitter that finds nobody flushing becomes the
    leader, lets the other evaluations that are ready in this tick add their inputs, and
    flushes until its own inputs are done, then hands over (so no caller is kept busy
    with other callers' work for long). Waiters wake whenever a batch finishes or the
    leader leaves; if the leader was cancelled mid-batch, its batch goes back to the queue and a
    waiter takes over, so no submitter can wait for work nobody does.
    """

    def __init__(
        self, run_batch: Callable[[list[Any]], Awaitable[list[Any]]], max_batch_size: int | None
    ) -> None:
        self._run_batch = run_batch
        self._max = max_batch_size or 1 << 30
        self._pending: list[tuple[Any, Promise[Any]]] = []
        self._is_flushing = False
        self._changed = anyio.Event()

    async def submit(self, items: list[Any]) -> list[Any]:
        promises: list[Promise[Any]] = []
        for item in items:
            promise: Promise[Any] = Promise()
            self._pending.append((item, promise))
            promises.append(promise)
        while not all(p.is_done for p in promises):
            if not self._is_flushing:
                await self._lead(promises)
            else:
                changed = self._changed
                await changed.wait()
        return [await p.wait() for p in promises]

    async def _lead(self, mine: list[Promise[Any]]) -> None:
        self._is_flushing = True
        try:
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            while self._pending and not all(p.is_done for p in mine):
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                try:
                    results = await self._run_batch([item for item, _ in batch])
                except Exception as e:
                    for _, promise in batch:
                        promise.set_exception(e)
                    self._notify()
                    continue
                except BaseException:
                    # Cancelled: hand the batch back for whoever leads next.
                    self._pending[:0] = batch
                    raise
                for (_, promise), result in zip(batch, results, strict=True):
                    promise.set_result(result)
                self._notify()
        finally:
            self._is_flushing = False
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
