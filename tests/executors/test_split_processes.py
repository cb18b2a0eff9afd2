"""Split worker processes: used only while splits overlap, same chunks, failures redone
in the thread, idle workers exit."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cocod.executors.splitting import RecursiveSplitter
from cocod.executors.splitting.processes import STOP_DEADLINE_S, SplitProcesses, languages_key
from cocod.executors.splitting.recursive import Span
from cocod.executors.splitting.separators import CustomLanguage

REPO = Path(__file__).resolve().parents[2]


def _markdown() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text) > 8000
    return text


@pytest.fixture(autouse=True)
def no_cpu_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model another test loaded in this process claims the cores for good
    (cocod.executors.cpu_claims); these tests are about the workers themselves."""
    from cocod.executors import cpu_claims

    monkeypatch.setattr(cpu_claims, "_claims", set())


@pytest.fixture
def processes() -> Iterator[SplitProcesses]:
    pool = SplitProcesses(2, idle_exit_s=60.0)
    yield pool
    pool.close()


def _overlapped(
    pool: SplitProcesses, request: tuple, in_thread: Callable[[], list[Span]]
) -> list[Span]:
    """Run ``request`` while another split is in flight (held open until it is done)."""
    release = threading.Event()
    holder_result: list[list[Span]] = []

    def hold() -> list[Span]:
        assert release.wait(60)
        return []

    holder = threading.Thread(
        target=lambda: holder_result.append(pool.split(((), "x", 10, None, None, None), hold))
    )
    holder.start()
    try:
        deadline = time.monotonic() + 10
        while pool._in_flight < 1:  # the holder is inside split()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return pool.split(request, in_thread)
    finally:
        release.set()
        holder.join(60)


def _warm(pool: SplitProcesses, workers: int = 1) -> None:
    """Overlap one split (which starts a worker in the background and splits in its
    thread meanwhile), then wait until ``workers`` workers are ready."""
    splitter = RecursiveSplitter()
    request = ((), _markdown(), 2000, None, 500, "markdown")
    assert _overlapped(pool, request, lambda: splitter.split_spans(*request[1:]))
    deadline = time.monotonic() + 60
    while pool.workers < workers or pool._idle.qsize() < workers:
        assert not pool._failures, "the worker failed to start (see the log)"
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.02)


def test_lone_split_stays_in_the_thread(processes: SplitProcesses) -> None:
    splitter = RecursiveSplitter()
    request = ((), _markdown(), 2000, None, 500, "markdown")
    calls: list[int] = []

    def in_thread() -> list[Span]:
        calls.append(1)
        return splitter.split_spans(*request[1:])

    spans = processes.split(request, in_thread)
    assert calls == [1]
    assert processes.offloaded == 0
    assert processes.workers == 0
    assert spans


def test_overlapping_split_goes_to_a_worker_with_the_same_chunks(
    processes: SplitProcesses,
) -> None:
    splitter = RecursiveSplitter()
    _warm(processes)
    for language, size, overlap in (("markdown", 2000, 500), ("python", 1000, 300), (None, 300, 0)):
        text = _markdown() if language != "python" else (REPO / "cocod/errors.py").read_text()
        request = ((), text, size, None, overlap, language)
        spans = _overlapped(processes, request, lambda: pytest.fail("split in the thread"))
        assert spans == splitter.split_spans(*request[1:])
    assert processes.offloaded == 3
    assert processes.workers >= 1
    # Once workers run, a lone split uses them too (no start-up cost left to avoid).
    request = ((), _markdown(), 2000, None, 500, "markdown")
    assert processes.split(request, lambda: pytest.fail("split in the thread")) == (
        splitter.split_spans(*request[1:])
    )


def test_a_cpu_model_keeps_splits_in_threads_unless_the_knob_chose_workers() -> None:
    """A model encoding on the CPU already uses every core (cpu_claims): split workers
    would take cores from it, so overlapping splits stay in threads; a size the user
    chose with COCOD_SPLIT_PROCESSES is used anyway."""
    from cocod.executors import cpu_claims

    request = ((), _markdown(), 2000, None, 500, "markdown")
    expected = RecursiveSplitter().split_spans(*request[1:])
    default_pool = SplitProcesses(2, idle_exit_s=8.0)  # the reaper looks every 2 s
    chosen_pool = SplitProcesses(2, idle_exit_s=60.0, size_chosen=True)
    try:
        _warm(default_pool)  # workers ready: only the claim can keep a split off them
        _warm(chosen_pool)
        cpu_claims.claim_cores("model:test")
        in_thread = []
        spans = _overlapped(
            default_pool,
            request,
            lambda: in_thread.append(1) or RecursiveSplitter().split_spans(*request[1:]),
        )
        assert spans == expected and in_thread == [1]
        assert default_pool.offloaded == 0
        deadline = time.monotonic() + 6  # idle workers give their memory back soon
        while default_pool.workers:
            assert time.monotonic() < deadline, "idle workers outlived the claim"
            time.sleep(0.05)
        spans = _overlapped(chosen_pool, request, lambda: pytest.fail("split in the thread"))
        assert spans == expected and chosen_pool.offloaded == 1
    finally:
        cpu_claims.release_cores("model:test")
        default_pool.close()
        chosen_pool.close()


def test_custom_languages_reach_the_worker(processes: SplitProcesses) -> None:
    languages = [CustomLanguage("Dashes", [r"\n-{3,}\n", r"\n"], ["dash"])]
    splitter = RecursiveSplitter(languages)
    _warm(processes)
    text = "\n---\n".join(f"part {i} " + "word " * 150 for i in range(12))
    request = (languages_key(languages), text, 400, None, 0, "dash")
    spans = _overlapped(processes, request, lambda: pytest.fail("split in the thread"))
    assert spans == splitter.split_spans(*request[1:])
    assert len(spans) > 12


def test_bad_sizes_raise_the_same_error_from_a_worker(processes: SplitProcesses) -> None:
    _warm(processes)
    request = ((), _markdown(), 2000, None, -1, "markdown")
    with pytest.raises(ValueError, match="chunk_overlap must not be negative"):
        _overlapped(processes, request, lambda: pytest.fail("split in the thread"))
    assert processes.workers >= 1


def test_a_dead_worker_is_replaced_by_the_thread(processes: SplitProcesses) -> None:
    splitter = RecursiveSplitter()
    request = ((), _markdown(), 2000, None, 500, "markdown")
    _warm(processes)
    for worker in list(processes._workers):
        worker.process.kill()
        worker.process.wait(10)
    calls: list[int] = []

    def in_thread() -> list[Span]:
        calls.append(1)
        return splitter.split_spans(*request[1:])

    assert processes.split(request, in_thread) == splitter.split_spans(*request[1:])
    assert calls == [1]


def test_idle_workers_exit() -> None:
    pool = SplitProcesses(1, idle_exit_s=0.3)
    try:
        _warm(pool)
        (worker,) = pool._workers
        deadline = time.monotonic() + 15
        while pool.workers:
            assert time.monotonic() < deadline, "the idle worker did not exit"
            time.sleep(0.05)
        assert worker.process.wait(15) == 0  # it exited at the end of its stdin
    finally:
        pool.close()


def test_the_first_overlapping_split_does_not_wait_for_a_worker_to_start(
    processes: SplitProcesses,
) -> None:
    splitter = RecursiveSplitter()
    request = ((), _markdown(), 2000, None, 500, "markdown")
    calls: list[int] = []

    def in_thread() -> list[Span]:
        calls.append(1)
        return splitter.split_spans(*request[1:])

    assert _overlapped(processes, request, in_thread) == splitter.split_spans(*request[1:])
    assert calls == [1]  # split here while a worker starts in the background
    _warm(processes)
    assert _overlapped(processes, request, lambda: pytest.fail("split in the thread"))
    assert processes.offloaded == 1


def test_closed_pool_splits_in_threads(processes: SplitProcesses) -> None:
    processes.close()
    splitter = RecursiveSplitter()
    request = ((), _markdown(), 2000, None, 500, "markdown")
    spans = _overlapped(processes, request, lambda: splitter.split_spans(*request[1:]))
    assert spans == splitter.split_spans(*request[1:])
    assert processes.offloaded == 0
    assert processes.workers == 0


def test_a_cocod_package_in_the_working_directory_is_not_what_the_worker_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m`` puts the working directory first on the path: a ``cocod`` there (a
    checkout of another version, anything) must not be what the worker imports."""
    fake = tmp_path / "cocod"
    fake.mkdir()
    (fake / "__init__.py").write_text("import os\nos._exit(7)\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    pool = SplitProcesses(1, idle_exit_s=60.0)
    try:
        _warm(pool)
        splitter = RecursiveSplitter()
        request = ((), _markdown(), 1000, None, 200, "markdown")
        spans = _overlapped(pool, request, lambda: pytest.fail("split in the thread"))
        assert spans == splitter.split_spans(*request[1:])
    finally:
        pool.close()


class _Unpicklable(str):
    """A text whose pickling raises ``error`` (the way a MemoryError would, mid-request)."""

    error: BaseException = RuntimeError("this text cannot be pickled")

    def __reduce_ex__(self, protocol: object) -> object:
        raise self.error


def _in_thread_within(pool: SplitProcesses, request: tuple, timeout: float = 30.0) -> list[Span]:
    """Split ``request`` in another thread; fail (rather than hang) past ``timeout``."""
    splitter = RecursiveSplitter()
    result: list[list[Span]] = []
    thread = threading.Thread(
        target=lambda: result.append(
            _overlapped(pool, request, lambda: splitter.split_spans(*request[1:]))
        ),
        daemon=True,
    )
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the split hung"
    return result[0]


def test_a_request_that_fails_to_pickle_drops_the_worker_and_splits_in_the_thread() -> None:
    pool = SplitProcesses(1, idle_exit_s=60.0)
    try:
        _warm(pool)
        (worker,) = pool._workers
        splitter = RecursiveSplitter()
        text = _Unpicklable(_markdown())
        request = ((), text, 2000, None, 500, "markdown")
        assert pool.split(request, lambda: splitter.split_spans(*request[1:])) == (
            splitter.split_spans(*request[1:])
        )
        assert pool.workers == 0  # dropped, not leaked: its stream may be half written
        assert worker.process.wait(10) == 0
        # Later overlapping splits neither wait for the dropped worker nor go wrong.
        plain = ((), _markdown(), 2000, None, 500, "markdown")
        for _ in range(3):
            assert _in_thread_within(pool, plain) == splitter.split_spans(*plain[1:])
    finally:
        pool.close()


def test_an_interrupt_while_calling_a_worker_drops_it_and_propagates() -> None:
    pool = SplitProcesses(1, idle_exit_s=60.0)
    try:
        _warm(pool)
        (worker,) = pool._workers
        text = _Unpicklable(_markdown())
        text.error = KeyboardInterrupt()
        request = ((), text, 2000, None, 500, "markdown")
        with pytest.raises(KeyboardInterrupt):
            pool.split(request, lambda: pytest.fail("split in the thread"))
        assert pool.workers == 0
        assert worker.process.wait(10) == 0
        splitter = RecursiveSplitter()
        plain = ((), _markdown(), 2000, None, 500, "markdown")
        assert _in_thread_within(pool, plain) == splitter.split_spans(*plain[1:])
    finally:
        pool.close()


def test_a_split_does_not_wait_while_every_worker_is_busy() -> None:
    """With the one worker stuck (stopped by SIGSTOP: a long split), another split runs in
    its own thread at once instead of queueing behind it."""
    pool = SplitProcesses(1, idle_exit_s=60.0)
    try:
        _warm(pool)
        (worker,) = pool._workers
        splitter = RecursiveSplitter()
        request = ((), _markdown(), 2000, None, 500, "markdown")
        expected = splitter.split_spans(*request[1:])
        os.kill(worker.process.pid, signal.SIGSTOP)
        try:
            stuck: list[list[Span]] = []
            holder = threading.Thread(
                target=lambda: stuck.append(pool.split(request, lambda: expected)), daemon=True
            )
            holder.start()
            deadline = time.monotonic() + 10
            while pool._idle.qsize():  # the holder took the worker
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert _in_thread_within(pool, request, timeout=10) == expected
            assert pool.offloaded == 0
        finally:
            os.kill(worker.process.pid, signal.SIGCONT)
        holder.join(30)
        assert stuck == [expected]
        assert pool.offloaded == 1
    finally:
        pool.close()


def test_close_is_bounded_while_a_long_split_is_in_flight() -> None:
    """A 12 MB split keeps its worker busy for many seconds: close() still returns within
    its deadline (the worker is killed) and the caller's split is redone in its thread."""
    pool = SplitProcesses(1, idle_exit_s=60.0)
    _warm(pool)
    (worker,) = pool._workers
    markdown = _markdown()
    text = markdown * (12_000_000 // len(markdown) + 1)
    redone: list[Span] = [(0, 1, 1, 1, 1, 2)]
    result: list[list[Span]] = []
    caller = threading.Thread(
        target=lambda: result.append(
            pool.split(((), text, 2000, None, 500, "markdown"), lambda: redone)
        ),
        daemon=True,
    )
    try:
        caller.start()
        deadline = time.monotonic() + 10
        while pool._idle.qsize():  # the caller took the worker
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.5)  # the request is on its way, or split already
        closer = threading.Thread(target=pool.close, daemon=True)
        started = time.monotonic()
        closer.start()
        closer.join(STOP_DEADLINE_S + 1)
        assert not closer.is_alive(), f"close() took over {STOP_DEADLINE_S + 1} s"
        assert time.monotonic() - started < STOP_DEADLINE_S + 1
        assert worker.process.poll() is not None
        caller.join(10)
        assert result == [redone]
        assert pool.workers == 0
    finally:
        worker.process.kill()
        caller.join(60)


def _texts(count: int, seed: int) -> list[str]:
    """``count`` different markdown texts (each long enough for a worker)."""
    markdown = _markdown()
    return [markdown[(seed * 997 + i * 613) % 4000 :][: 3000 + 37 * i] for i in range(count)]


def _split_for(
    pool: SplitProcesses, texts: list[str], seconds: float, threads: int
) -> tuple[int, int, bool]:
    """Split ``texts`` round and round from ``threads`` threads for ``seconds``: (splits,
    wrong results or errors, whether a thread hung)."""
    splitter = RecursiveSplitter()
    requests = [((), text, 300, None, 50, "markdown") for text in texts]
    expected = [splitter.split_spans(*request[1:]) for request in requests]
    counts = [0, 0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def loop(start: int) -> None:
        i = start
        while time.monotonic() < stop_at:
            k = i % len(requests)
            try:
                ok = pool.split(requests[k], lambda k=k: expected[k]) == expected[k]
            except Exception:
                ok = False
            with lock:
                counts[0] += 1
                counts[1] += not ok
            i += 1

    workers = [threading.Thread(target=loop, args=(n * 7,), daemon=True) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(seconds + 20)
    return counts[0], counts[1], any(thread.is_alive() for thread in workers)


def _wait_child(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -1


def test_a_forked_process_neither_shares_the_workers_nor_gets_their_chunks() -> None:
    """After os.fork() (a preforking server, a multiprocessing pool started after a split
    ran) parent and child split different texts at once: each gets its own chunks, and
    the child starts workers of its own."""
    pool = SplitProcesses(1, idle_exit_s=60.0)
    _warm(pool)
    (worker,) = pool._workers
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status, never return into pytest
        code = 3
        try:
            splits, wrong, hung = _split_for(pool, _texts(24, seed=2), 3.0, threads=2)
            code = 4 if hung else 2 if wrong or not splits else 0
            if code == 0:
                _warm(pool)  # its own worker, which a lone split now uses
                request = ((), _markdown(), 2000, None, 500, "markdown")
                expected = RecursiveSplitter().split_spans(*request[1:])
                offloaded = pool.offloaded
                code = 5 if pool.split(request, lambda: []) != expected else 0
                code = code or (6 if pool.offloaded != offloaded + 1 else 0)
            pool.close()
        finally:
            os._exit(code)
    try:
        splits, wrong, hung = _split_for(pool, _texts(24, seed=1), 3.0, threads=1)
        child = _wait_child(pid, 60)
        assert not hung, "a split in the parent hung"
        assert (splits, wrong) == (splits, 0), f"{wrong} of {splits} splits in the parent wrong"
        assert splits > 0
        assert pool.offloaded >= splits  # the parent kept using its worker
        assert child == 0, (
            f"the child failed (exit {child}: 2 wrong chunks, 4 hung, 5/6 own worker)"
        )
    finally:
        worker.process.kill()
        pool.close()


def test_a_split_waits_for_a_busy_pool_rather_than_hold_the_gil() -> None:
    """With every worker running a split, the next one waits for a worker (a split in a
    thread holds this process's GIL, which the event loop needs) and gets its chunks there."""
    pool = SplitProcesses(1, idle_exit_s=60.0)
    try:
        _warm(pool)
        worker = pool._idle.get_nowait()  # the one worker is busy now
        splitter = RecursiveSplitter()
        request = ((), _markdown(), 2000, None, 500, "markdown")
        result: list[list[Span]] = []
        waiter = threading.Thread(
            target=lambda: result.append(
                _overlapped(pool, request, lambda: pytest.fail("split in the thread"))
            )
        )
        waiter.start()
        time.sleep(0.3)
        assert not result  # still waiting for the worker
        pool._release(worker)  # the busy split ends
        waiter.join(30)
        assert result == [splitter.split_spans(*request[1:])]
    finally:
        pool.close()


def test_the_default_pool_has_one_worker_more_than_the_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cocod.executors.splitting import processes

    monkeypatch.delenv(processes.PROCESSES_KNOB, raising=False)
    for cpus, expected in ((1, 0), (2, 3), (3, 4), (8, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert processes.default_processes() == expected
