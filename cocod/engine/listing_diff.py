"""Which listed keys differ from the tracking: the first step of every full pass.

A store that can hand over its tracked ordinals (:class:`ListingStateStore`, the
Postgres one) reads them while the source is listed in a worker thread, so the server's
part of the comparison is off the pass's path: after the stat() walk, what is left is
one dict pop per tracked row. A store that cannot gets the listing after the walk
(:meth:`~cocod.engine.interfaces.StateStore.diff_listing`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import anyio

from cocod.engine.interfaces import ListingDiff, Ordinal, SourceReader, StateStore
from cocod.errors import SourceError

THREADED_DIFF_MIN_ROWS = 8192
"""Comparing more listed and tracked rows than this runs in a worker thread (about
0.5 µs a row: the event loop is never blocked for more than a few ms)."""


class TrackedListing(Protocol):
    """A source's tracked ordinals, ready to be compared with a full listing."""

    def __len__(self) -> int: ...

    def diff(self, listed: Mapping[str, Ordinal]) -> ListingDiff: ...


@runtime_checkable
class ListingStateStore(Protocol):
    """A store that can hand over its tracked ordinals for the pass to compare."""

    async def load_listing_state(self, source_id: int, logic_fp: bytes) -> TrackedListing: ...


async def list_and_diff(
    reader: SourceReader,
    store: StateStore,
    source_id: int,
    logic_fp: bytes,
    thread_limiter: anyio.CapacityLimiter | None = None,
) -> tuple[dict[str, Ordinal], ListingDiff]:
    """The source's listing and what differs between it and the tracking."""
    listed: dict[str, Ordinal] = {}
    if not isinstance(store, ListingStateStore):
        listed = await reader.list_rows()
        return listed, await store.diff_listing(source_id, listed, logic_fp)

    async def list_source() -> None:
        nonlocal listed
        listed = await reader.list_rows()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(list_source)  # runs once the query below has been sent
            tracked = await store.load_listing_state(source_id, logic_fp)
    except BaseExceptionGroup as group:
        error = first_error(group)
        raise error from error.__cause__
    if len(tracked) + len(listed) >= THREADED_DIFF_MIN_ROWS:
        diff = await anyio.to_thread.run_sync(tracked.diff, listed, limiter=thread_limiter)
    else:
        diff = tracked.diff(listed)
    return listed, diff


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The error that matters in a task group's failure: a source-level one first."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e)

    walk(group)
    for leaf in leaves:
        if isinstance(leaf, SourceError):
            return leaf
    return leaves[0] if leaves else group
