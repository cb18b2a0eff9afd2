"""A batch-mode live updater (``live_mode=False``: one catch-up pass, then return) whose
lease goes away mid-pass ends with a typed error from ``wait()``; it never waits for the
whole outage, or for the process that took its lease.

The pass is held in its transform (a threading.Event the test controls), so "mid-pass" is
certain: the lease is gone before the pass may go on.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cocod
from bench.paragraph_flow import FlowDefinition, paragraph_flow
from cocod.errors import DatabaseUnavailableError, LeaseLostError
from cocod.runtime.live_updater import FlowLiveUpdater, FlowLiveUpdaterOptions
from cocod.storage.embedded import EmbeddedPostgres, start_embedded_postgres
from cocod.storage.leases import LEASE_CLASSID, LeaseHolder, try_acquire
from tests.conftest import SqlHelper, write
from tests.flows import Paragraph, paragraphs_of, tiny_embed

pytestmark = pytest.mark.timeout(120)

SPLITTING = threading.Event()
"""Set once the pass reached the transform."""
GO_ON = threading.Event()
"""The transform waits for it (bounded), so the pass stays in flight until the test says."""
RAISES_WITHIN_S = 30.0
"""Generous: the keeper gives up after 0.5 + 1 + 2 s of backoff."""


@cocod.op.function()
def held_paragraphs(content: str) -> list[Paragraph]:
    SPLITTING.set()
    GO_ON.wait(30)
    return paragraphs_of(content)


def _flow(docs: Path) -> FlowDefinition:
    return paragraph_flow(
        str(docs),
        "batch_rows",
        split=held_paragraphs,
        embed=tiny_embed,
        metric=cocod.VectorSimilarityMetric.COSINE_SIMILARITY,
    )


@pytest.fixture(autouse=True)
def _events() -> Iterator[None]:
    SPLITTING.clear()
    GO_ON.clear()
    yield
    GO_ON.set()  # never leave a worker thread waiting


def _wait(condition: object, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _start_batch(docs: Path) -> tuple[cocod.Flow, FlowLiveUpdater]:
    write(docs / "a.md", "one\n\ntwo")
    flow = cocod.open_flow("Batch", _flow(docs))
    flow.setup()
    updater = FlowLiveUpdater(flow, FlowLiveUpdaterOptions(live_mode=False))
    updater.start()
    assert SPLITTING.wait(30), "the pass never reached its transform"
    assert updater.lease_epochs()[1] is not None  # the pass runs under the keeper's lease
    return flow, updater


def _error_of_wait(updater: FlowLiveUpdater) -> BaseException | None:
    """What ``wait()`` raised, or fail when it is still waiting after the bound."""
    outcome: list[BaseException | None] = []

    def wait() -> None:
        try:
            updater.wait()
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    waiter = threading.Thread(target=wait, daemon=True)
    started = time.monotonic()
    waiter.start()
    waiter.join(RAISES_WITHIN_S)
    if waiter.is_alive():
        updater.abort()
        waiter.join(15)
        pytest.fail(f"wait() was still waiting after {time.monotonic() - started:.0f} s")
    return outcome[0]


def _lease_backend(sql: SqlHelper) -> int:
    return int(
        str(
            sql.fetchval(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND "
                "classid = $1::int::oid AND objsubid = 2 AND granted",
                LEASE_CLASSID,
            )
        )
    )


def test_a_lease_taken_by_another_process_mid_pass_ends_the_batch_with_lease_lost(
    sql: SqlHelper, tmp_path: Path
) -> None:
    flow, updater = _start_batch(tmp_path / "docs")
    flow_id = int(str(sql.fetchval("SELECT flow_id FROM cocod.leases")))
    backend = _lease_backend(sql)
    release = threading.Event()
    took: list[object] = []

    async def kill_and_hold() -> None:
        await asyncio.to_thread(sql.fetch, "SELECT pg_terminate_backend($1, 5000)", backend)
        for _ in range(500):
            lease = await try_acquire(sql.url, flow_id, LeaseHolder("host-z", 999, None, "cli"))
            if lease is not None:
                took.append(lease)
                break
            await asyncio.sleep(0.01)
        await asyncio.to_thread(release.wait, 60)
        for lease in took:
            await lease.release()  # type: ignore[attr-defined]

    holder = threading.Thread(target=asyncio.run, args=(kill_and_hold(),), daemon=True)
    holder.start()
    try:
        _wait(lambda: took, "the other process to take the lease")
        _wait(lambda: updater.lease_epochs()[1] is None, "the updater to see its lease lost")
        GO_ON.set()
        error = _error_of_wait(updater)
    finally:
        release.set()
        holder.join(timeout=15)
        flow.close()
    assert isinstance(error, LeaseLostError), repr(error)
    assert "host host-z pid 999" in str(error) and "'Batch'" in str(error), error


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A Postgres of this test alone: the test stops it."""
    server = start_embedded_postgres(tmp_path / "state")
    yield server
    cocod.stop()
    server.stop()


def test_the_database_stopping_mid_pass_ends_the_batch_with_database_unavailable(
    own_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    cocod.init(cocod.Settings(database=cocod.DatabaseConnectionSpec(url=own_server.uri)))
    flow, updater = _start_batch(tmp_path / "docs")
    try:
        own_server.stop()
        _wait(lambda: updater.lease_epochs()[1] is None, "the updater to see its lease lost")
        GO_ON.set()
        error = _error_of_wait(updater)
    finally:
        flow.close()
    assert isinstance(error, DatabaseUnavailableError), repr(error)
    assert "batch update of flow 'Batch'" in str(error), error
