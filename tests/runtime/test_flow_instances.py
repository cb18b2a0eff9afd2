"""FlowInstances against real Postgres: the tutorial's cache of flows, without its bugs.

Each test opens real flows (``cocod.open_flow`` + ``setup()``) through the user's opener and
checks what the issue asks: expiry closes, eviction closes, 16 threads racing on a cold cache
all succeed with one open, and a flow in use is not closed under its update.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

import cocod as cocoindex
from cocod.flow_instances import FlowInstances
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow

OPENED: list[str] = []


def _opener(docs: Path) -> Callable[[str], cocoindex.Flow]:
    """The body of the tutorial's ``get_text_embedding_flow``, one folder per name."""

    def open_one(name: str) -> cocoindex.Flow:
        OPENED.append(name)
        time.sleep(0.05)  # widen the window in which racing callers arrive
        return cocoindex.open_flow(
            f"TextEmbedding_{name}",
            paragraph_flow(str(docs / name), table_name=f"{name}_embeddings"),
        )

    return open_one


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    for name in ("foo", "bar", "baz", "qux"):
        write(tmp_path / "docs" / name / "a.md", f"{name} one\n\n{name} two")
    OPENED.clear()
    return tmp_path / "docs"


@pytest.fixture
def make(cocod_db: str) -> Iterator[Callable[..., FlowInstances[cocoindex.Flow]]]:
    made: list[FlowInstances[cocoindex.Flow]] = []

    def factory(opener: Callable[[str], cocoindex.Flow], **kw: float) -> FlowInstances:  # type: ignore[type-arg]
        instances: FlowInstances[cocoindex.Flow] = FlowInstances(opener, **kw)  # type: ignore[arg-type]
        made.append(instances)
        return instances

    yield factory
    for instances in made:
        instances.close_all()


def _is_open(name: str) -> bool:
    return f"TextEmbedding_{name}" in cocoindex.flow_names()


def _wait_until(predicate: Callable[[], bool], what: str, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting until {what}"
        time.sleep(0.02)


def test_get_opens_and_sets_up_once_then_reuses(docs: Path, make, sql: SqlHelper) -> None:  # type: ignore[no-untyped-def]
    instances = make(_opener(docs))
    flow = instances.get("foo")
    assert instances.get("foo") is flow and OPENED == ["foo"]
    assert sql.fetchval("SELECT to_regclass('foo_embeddings') IS NOT NULL") is True
    instances.update("foo")
    assert sql.fetchval("SELECT count(*) FROM foo_embeddings") == 2


def test_expiry_closes_and_the_next_get_reopens(docs: Path, make, sql: SqlHelper) -> None:  # type: ignore[no-untyped-def]
    instances = make(_opener(docs), ttl=0.3)
    first = instances.get("foo")
    _wait_until(lambda: not _is_open("foo"), "the idle flow is closed by the sweeper")
    assert "closed" in repr(first) and instances.names() == []
    # The tutorial's TTLCache fails here ("Flow with name … already exists").
    second = instances.get("foo")
    assert second is not first and _is_open("foo")
    instances.update("foo")
    assert sql.fetchval("SELECT count(*) FROM foo_embeddings") == 2


def test_eviction_closes_the_least_recently_used(docs: Path, make) -> None:  # type: ignore[no-untyped-def]
    instances = make(_opener(docs), maxsize=2)
    instances.get("foo")
    instances.get("bar")
    instances.get("foo")  # bar is now the least recently used
    instances.get("baz")
    assert instances.names() == ["foo", "baz"]
    assert not _is_open("bar") and _is_open("foo") and _is_open("baz")
    instances.get("bar")  # reopens; evicts foo
    assert instances.names() == ["baz", "bar"] and not _is_open("foo")


def test_the_end_of_a_use_counts_as_a_use_for_eviction(docs: Path, make) -> None:  # type: ignore[no-untyped-def]
    """A flow whose long update just ended is recently used, though it was got first."""
    closed: list[str] = []
    instances = make(
        _opener(docs), maxsize=2, on_close=lambda name, flow, reason: closed.append(name)
    )
    with instances.use("foo"):
        instances.get("bar")
    instances.get("baz")  # past maxsize: bar (used before foo's use ended) goes
    assert closed == ["bar"] and instances.names() == ["foo", "baz"]


def test_sixteen_threads_racing_on_a_cold_cache_all_succeed(docs: Path, make) -> None:  # type: ignore[no-untyped-def]
    instances = make(_opener(docs))
    barrier = threading.Barrier(16)
    results: list[object] = [None] * 16

    def worker(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = instances.get("foo" if i % 2 else "bar")
        except BaseException as e:  # recorded, asserted below
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, cocoindex.Flow) for r in results)
    assert len({id(r) for r in results}) == 2
    assert sorted(OPENED) == ["bar", "foo"], "each flow was opened once"


def test_async_callers_racing_share_one_open(docs: Path, make) -> None:  # type: ignore[no-untyped-def]
    instances = make(_opener(docs))

    async def main() -> list[cocoindex.Flow]:
        return list(await asyncio.gather(*(instances.get_async("qux") for _ in range(8))))

    flows = asyncio.run(main())
    assert len({id(f) for f in flows}) == 1 and OPENED == ["qux"]


GATE = threading.Event()
ENTERED = threading.Event()


@cocoindex.op.function()
def wait_at_gate(text: str) -> str:
    """Holds an update open until the test lets it finish (bounded: never hangs a run)."""
    ENTERED.set()
    GATE.wait(timeout=30)
    return text


def _gated_flow(source: str):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["files"] = fb.add_source(cocoindex.sources.LocalFile(path=source))
        out = scope.add_collector()
        with scope["files"].row() as f:
            f["gated"] = f["content"].transform(wait_at_gate)
            out.collect(filename=f["filename"], gated=f["gated"])
        out.export("rows", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

    return define


def test_a_flow_in_use_is_not_closed(docs: Path, make, sql: SqlHelper) -> None:  # type: ignore[no-untyped-def]
    def opener(name: str) -> cocoindex.Flow:
        if name == "gated":
            return cocoindex.open_flow("TextEmbedding_gated", _gated_flow(str(docs / "foo")))
        return _opener(docs)(name)

    instances = make(opener, ttl=0.2, maxsize=1)
    GATE.clear()
    ENTERED.clear()
    errors: list[BaseException] = []

    def run_update() -> None:
        try:
            instances.update("gated")
        except BaseException as e:
            errors.append(e)

    updater = threading.Thread(target=run_update)
    updater.start()
    try:
        assert ENTERED.wait(timeout=60), "the update reached the gated function"
        time.sleep(0.5)  # well past the TTL
        assert instances.expire() == []
        instances.get("bar")  # maxsize=1: eviction must pick bar's neighbour, not "gated"
        instances.close("gated")  # deferred until the update ends
        instances.close_all()
        assert _is_open("gated"), "closed under a running update"
    finally:
        GATE.set()
        updater.join(timeout=60)
    assert not errors
    assert sql.fetchval("SELECT count(*) FROM textembedding_gated__rows") == 1
    _wait_until(lambda: not _is_open("gated"), "the deferred close happens after the update")


def test_a_failing_opener_leaves_nothing_behind(docs: Path, make) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []

    def opener(name: str) -> cocoindex.Flow:
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("registry unavailable")
        return _opener(docs)(name)

    instances = make(opener)
    with pytest.raises(RuntimeError, match="registry unavailable"):
        instances.get("foo")
    assert instances.names() == []
    assert instances.get("foo") is not None and calls == ["foo", "foo"]


def test_async_opener_native_setup_and_on_close(docs: Path, make, sql: SqlHelper) -> None:  # type: ignore[no-untyped-def]
    """The daemon's shape: an async opener, setup_async on the loop, its own expiry loop."""
    closed: list[str] = []

    async def open_async(name: str) -> cocoindex.Flow:
        OPENED.append(name)
        return cocoindex.open_flow(f"TextEmbedding_{name}", paragraph_flow(str(docs / name)))

    def on_close(name: str, flow: cocoindex.Flow, reason: str) -> None:
        closed.append(f"{name}:{reason}")

    instances = make(open_async, ttl=0.2, sweep=False, on_close=on_close)

    async def main() -> None:
        flows = await asyncio.gather(*(instances.get_async("foo") for _ in range(6)))
        assert len({id(f) for f in flows}) == 1 and OPENED == ["foo"]
        await instances.update_async("foo")
        async with instances.use_async("foo"):
            await asyncio.sleep(0.4)
            assert instances.expire() == [], "pinned: not expired"
        await asyncio.sleep(0.4)
        assert instances.expire() == ["foo"]

    asyncio.run(main())
    assert closed == ["foo:expired"] and not _is_open("foo")
    assert sql.fetchval("SELECT count(*) FROM textembedding_foo__paragraphs") == 2
    with pytest.raises(TypeError, match="get_async"):
        instances.get("foo")


def test_a_cancelled_open_lets_a_waiter_open(docs: Path, make) -> None:  # type: ignore[no-untyped-def]
    started = threading.Event()

    async def slow_then_fast(name: str) -> cocoindex.Flow:
        OPENED.append(name)
        if len(OPENED) == 1:
            started.set()
            await asyncio.sleep(30)  # cancelled below
        return cocoindex.open_flow(f"TextEmbedding_{name}", paragraph_flow(str(docs / name)))

    instances = make(slow_then_fast, setup=False)

    async def main() -> cocoindex.Flow:
        first = asyncio.ensure_future(instances.get_async("bar"))
        await asyncio.to_thread(started.wait, 30)
        waiter = asyncio.ensure_future(instances.get_async("bar"))
        await asyncio.sleep(0.1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await asyncio.wait_for(waiter, 30)

    flow = asyncio.run(main())
    assert _is_open("bar") and instances.get_async is not None and OPENED == ["bar", "bar"]
    assert isinstance(flow, cocoindex.Flow)


def test_async_waiters_hold_no_worker_thread(docs: Path, make) -> None:  # type: ignore[no-untyped-def]
    """60 callers wait for one open whose opener needs a worker thread after they arrived:
    waiters parked in threads would hold all 40 of anyio's default tokens and starve it."""

    async def open_after_waiters_arrive(name: str) -> cocoindex.Flow:
        OPENED.append(name)
        await asyncio.sleep(0.2)  # every waiter is waiting by now

        def open_in_thread() -> cocoindex.Flow:
            return cocoindex.open_flow(f"TextEmbedding_{name}", paragraph_flow(str(docs / name)))

        return await anyio.to_thread.run_sync(open_in_thread)  # the default limiter

    instances = make(open_after_waiters_arrive, setup=False)

    async def main() -> list[cocoindex.Flow]:
        calls = (instances.get_async("baz") for _ in range(60))
        return list(await asyncio.wait_for(asyncio.gather(*calls), 30))

    flows = asyncio.run(main())
    assert len({id(f) for f in flows}) == 1 and OPENED == ["baz"]


def test_a_use_after_a_deferred_close_gets_a_fresh_flow(docs: Path, make) -> None:  # type: ignore[no-untyped-def]
    """use → close → use → release both: the old flow is closed, the second use got a new
    one (the name's parameters may have changed: that is why it was closed), and that new
    one stays open. The second use must not revive the pending close, nor get the old flow."""
    closed: list[tuple[str, cocoindex.Flow]] = []
    instances = make(
        _opener(docs), on_close=lambda name, flow, reason: closed.append((str(reason), flow))
    )
    first_in = threading.Event()
    first_out = threading.Event()
    got: dict[str, cocoindex.Flow] = {}
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            with instances.use("foo") as flow:
                got["first"] = flow
                first_in.set()
                assert first_out.wait(timeout=30)
        except BaseException as e:  # recorded, asserted below
            errors.append(e)

    def second_use() -> None:
        try:
            with instances.use("foo") as flow:
                got["second"] = flow
                assert not closed or closed[-1][1] is not flow
        except BaseException as e:
            errors.append(e)

    holder = threading.Thread(target=first_use)
    holder.start()
    assert first_in.wait(timeout=60)
    instances.close("foo")  # deferred: the first use still holds it
    assert instances.is_closing("foo") and _is_open("foo")
    second = threading.Thread(target=second_use)
    second.start()
    second.join(timeout=0.3)
    assert second.is_alive() and "second" not in got, "it got the flow waiting to close"
    assert OPENED == ["foo"], "nor may it open the name while the old flow is open"
    first_out.set()
    holder.join(timeout=60)
    second.join(timeout=60)
    assert not errors, errors
    assert got["second"] is not got["first"] and OPENED == ["foo", "foo"]
    assert closed == [("closed", got["first"])], "the old flow closed, the new one did not"
    assert "closed" in repr(got["first"]) and _is_open("foo")
    assert instances.names() == ["foo"] and instances.get("foo") is got["second"]


def test_waiting_for_a_close_is_bounded(docs: Path, make) -> None:  # type: ignore[no-untyped-def]
    """A call for a name whose old flow never gets released gives up with a typed error
    (sync and async alike), and the old flow still closes when its holder ends."""
    from cocod.flow_instances import FlowStillClosingError

    instances = make(_opener(docs), close_timeout=0.3)
    with instances.use("bar") as old:
        instances.close("bar")
        with pytest.raises(FlowStillClosingError, match="'bar' was closed while a call"):
            instances.get("bar")

        async def main() -> None:
            with pytest.raises(FlowStillClosingError) as caught:
                async with instances.use_async("bar"):
                    pass
            assert caught.value.name == "bar" and caught.value.timeout == pytest.approx(0.3)

        asyncio.run(main())
        assert _is_open("bar")
    assert "closed" in repr(old) and not _is_open("bar") and instances.names() == []
    assert instances.get("bar") is not old


def test_a_close_during_an_open_closes_that_flow(docs: Path, make) -> None:  # type: ignore[no-untyped-def]
    """close(name) while its open runs: the opened flow is not handed out and kept; the
    get that opened it opens afresh (it asked before the close was honoured)."""
    opening = threading.Event()
    proceed = threading.Event()

    def slow_opener(name: str) -> cocoindex.Flow:
        if not OPENED:
            opening.set()
            assert proceed.wait(timeout=30)
        return _opener(docs)(name)

    instances = make(slow_opener)
    result: list[cocoindex.Flow] = []
    getter = threading.Thread(target=lambda: result.append(instances.get("baz")))
    getter.start()
    assert opening.wait(timeout=30)
    instances.close("baz")
    proceed.set()
    getter.join(timeout=60)
    assert OPENED == ["baz", "baz"] and len(result) == 1 and _is_open("baz")
    assert "closed" not in repr(result[0]) and instances.names() == ["baz"]
