"""Split documents in worker processes while a pass splits many of them at once.

Why: a split is pure CPU that holds the GIL (tree-sitter's parse, the merge's integer
loops: about a millisecond per chunk), so the engine's worker threads cannot spread it
over the machine's cores, and during an initial index the splitter alone keeps one core
busy while the other waits.  A few long-lived worker processes (``worker.py``) split in
parallel while the calling threads wait with the GIL released.

When: only while splits overlap.  A split that starts while another one is still running
(rows evaluated concurrently: an initial index, a burst of changes) goes to a worker; a
lone split (a one-file edit) runs in its thread as before and never waits for a process
to start.  Workers that started stay for :data:`IDLE_EXIT_S` after their last split, then
exit, so an idle daemon holds none.  Text shorter than :data:`MIN_TEXT_CHARS` is split in
the thread (the round trip would cost more).

The chunks are the same either way (the same code runs in the worker).  A worker that
dies or fails is dropped and the split is redone in the calling thread, so a failure
costs time, never a row; after :data:`MAX_FAILURES` workers lost or not started,
the process splits in threads only.  A forked child (a preforking server, a
multiprocessing pool) never uses its parent's workers: it starts its own.

``COCOD_SPLIT_PROCESSES`` sets the number of workers (``0``: never; default: one more
than the CPUs this process may use, at most 4, none on a single CPU).  By default no
split goes to a worker once a flow in this process embeds with a model on the CPU
(:mod:`cocod.executors.cpu_claims`): torch already uses every core, and a split is a
small part of a chunk's cost there.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from cocod.executors.cpu_claims import cores_claimed

from .recursive import Span
from .separators import CustomLanguage
from .worker import (
    STOP_DEADLINE_S,
    LanguagesKey,
    WorkerGone,
    WorkerProcess,
    forget_inherited_workers,
)

__all__ = [
    "IDLE_EXIT_S",
    "MIN_TEXT_CHARS",
    "PROCESSES_KNOB",
    "STOP_DEADLINE_S",
    "WAIT_FOR_WORKER_S",
    "SplitProcesses",
    "default_processes",
    "explicitly_set",
    "languages_key",
    "shared_processes",
]

log = structlog.get_logger(__name__)

PROCESSES_KNOB = "COCOD_SPLIT_PROCESSES"
IDLE_EXIT_S = 20.0
MIN_TEXT_CHARS = 2048
MAX_FAILURES = 3
WAIT_FOR_WORKER_S = 2.0
"""How long a split waits for a busy pool before it splits in its own thread."""
_WARM_UP = ((), "# warm-up\n\nLoads the markdown grammar.", 8, None, None, "markdown")
"""A first request each worker answers before it is used, so no split pays its imports."""


def explicitly_set() -> bool:
    """Did the user choose the number of workers (``COCOD_SPLIT_PROCESSES``)?"""
    return bool(os.environ.get(PROCESSES_KNOB, "").strip())


def default_processes() -> int:
    raw = os.environ.get(PROCESSES_KNOB, "").strip()
    if raw:
        try:
            return max(0, int(raw))
        except ValueError:
            log.warning("split.processes.bad_setting", value=raw, using=0)
            return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    # One more than the cores: this process's own share of a row (reading, the event loop,
    # the commits) and the server's leave gaps that a third worker fills on 2 cores
    # (initial index of 5,000 files: 2,300 chunks/s with two, 2,600 with three, 22 MB more).
    return 0 if cpus < 2 else min(cpus + 1, 4)


def languages_key(languages: Sequence[CustomLanguage]) -> LanguagesKey:
    return tuple(
        (lang.language_name, tuple(lang.separators_regex), tuple(lang.aliases))
        for lang in languages
    )


class SplitProcesses:
    """Up to ``size`` split workers, started on demand and stopped when idle."""

    def __init__(
        self, size: int, idle_exit_s: float = IDLE_EXIT_S, *, size_chosen: bool = False
    ) -> None:
        self.size = size
        self.size_chosen = size_chosen
        """The user set ``size`` (the knob): used even beside a CPU model."""
        self.idle_exit_s = idle_exit_s
        self._failures = 0
        self._start_afresh(closed=False)
        self.offloaded = 0
        """Splits a worker did (for tests and benchmarks)."""
        _pools.add(self)

    def _start_afresh(self, *, closed: bool) -> None:
        """No workers yet, owned by this process (also a forked child's new start)."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._idle: queue.LifoQueue[WorkerProcess] = queue.LifoQueue()
        self._workers: set[WorkerProcess] = set()
        self._in_flight = 0
        self._starting = 0
        self._reaper: threading.Thread | None = None
        self._closed = threading.Event()
        if closed:
            self._closed.set()

    def _after_fork(self) -> None:
        """In a forked child (from :func:`_after_fork_in_child`): the workers, the
        threads, the locks' state are the parent's, so start afresh; the child starts
        workers of its own when its splits overlap."""
        self._start_afresh(closed=self._closed.is_set())

    @property
    def workers(self) -> int:
        with self._lock:
            return len(self._workers)

    def split(
        self,
        request: tuple[LanguagesKey, str, int, int | None, int | None, str | None],
        in_thread: Callable[[], list[Span]],
    ) -> list[Span]:
        """The spans for ``request``: from a worker while splits overlap, else (and when
        a worker fails) from ``in_thread()``."""
        if self._pid != os.getpid():  # forked by a way that ran no at-fork hook
            return in_thread()
        with self._lock:
            self._in_flight += 1
            busy = self._in_flight > 1 or bool(self._workers)
        try:
            if busy and self._usable(request[1]):
                spans = self._offload(request)
                if spans is not None:
                    return spans
            return in_thread()
        finally:
            with self._lock:
                self._in_flight -= 1

    def _usable(self, text: str) -> bool:
        return len(text) >= MIN_TEXT_CHARS and self._can_use()

    def _can_use(self) -> bool:
        if self.size <= 0 or self._failures >= MAX_FAILURES or self._closed.is_set():
            return False
        return not self._stands_down()

    def _stands_down(self) -> bool:
        """A CPU model already keeps every core busy: workers would only take cores from
        it and hold memory (cocod.executors.cpu_claims), so none takes a split, and each
        stops after its current one or at the reaper's next round (a quarter of
        ``idle_exit_s``)."""
        return cores_claimed() and not self.size_chosen

    def _offload(self, request: tuple[Any, ...]) -> list[Span] | None:
        worker = self._acquire()
        if worker is None:
            return None
        try:
            status, value = worker.call(request)
        except WorkerGone as e:
            log.warning("split.worker.lost", error=str(e))
            self._discard(worker)
            return None
        except Exception as e:
            # A request that failed to pickle (a MemoryError on a huge text), a reply
            # that failed to load: the stream may be half written or half read, so the
            # worker is never reused, and the split is redone in the thread.
            log.warning("split.worker.call_failed", error=f"{type(e).__name__}: {e}")
            self._discard(worker, failed=False)
            return None
        except BaseException:
            self._discard(worker, failed=False)  # an interrupt: same, and it propagates
            raise
        self._release(worker)
        if status == "ok":
            self.offloaded += 1
            return value  # type: ignore[no-any-return]
        if status == "value_error":
            raise ValueError(value)
        log.warning("split.worker.failed", error=value)
        return None  # redone in the thread, where the error surfaces as usual

    def _acquire(self) -> WorkerProcess | None:
        """An idle worker; None (split in the thread) while a worker is only starting, or
        once they cannot be used (closed, or failing).

        A split that asks for a worker when fewer than ``size`` run starts one in the
        background and splits in its thread meanwhile, so a burst of two files never
        waits for a process to start. Once all ``size`` run, it waits up to
        :data:`WAIT_FOR_WORKER_S` for one to be free rather than split in its thread:
        a split holds this process's GIL, which the event loop and the other rows need
        (measured, initial index of 5,000 files on 2 cores: 2,010 chunks/s splitting in
        threads, 2,300 waiting, with the same two workers).
        """
        with self._lock:
            if not self._can_use():
                return None
            with contextlib.suppress(queue.Empty):
                return self._idle.get_nowait()
            if len(self._workers) + self._starting < self.size:
                self._starting += 1
                start = True
            else:
                start = False
                if self._starting:
                    return None  # the pool is not up yet: never wait for a start
        if start:
            threading.Thread(target=self._start, name="cocod-split-start", daemon=True).start()
            return None
        with contextlib.suppress(queue.Empty):
            worker = self._idle.get(timeout=WAIT_FOR_WORKER_S)
            if self._can_use():
                return worker
            self._release(worker)
        return None

    def _start(self) -> None:
        """Start a worker and warm it up (imports, grammar) before anyone waits on it."""
        worker: WorkerProcess | None = None
        try:
            worker = WorkerProcess()
            status, value = worker.call(_WARM_UP)
            if status != "ok":
                raise WorkerGone(str(value))
        except Exception as e:  # whatever it is, the count of starting ones comes down
            with self._lock:
                self._starting -= 1
                self._failures += 1
            log.warning("split.worker.start_failed", error=f"{type(e).__name__}: {e}")
            if worker is not None:
                worker.stop()
            return
        with self._lock:
            self._starting -= 1
            closed = self._closed.is_set()
            if not closed:
                self._workers.add(worker)
                if self._reaper is None:
                    self._reaper = threading.Thread(
                        target=self._reap, name="cocod-split-reaper", daemon=True
                    )
                    self._reaper.start()
        if closed:
            worker.stop()
        else:
            self._release(worker)

    def _release(self, worker: WorkerProcess) -> None:
        """Back to the idle ones; stopped instead once the pool is closed (close() leaves
        a worker in use to the thread using it)."""
        with self._lock:
            keep = not self._closed.is_set() and worker in self._workers
            if keep and self._stands_down():
                keep = False  # a CPU model loaded meanwhile: give its memory back now
                self._workers.discard(worker)
            if keep:
                self._idle.put(worker)
        if not keep:
            worker.stop()

    def _discard(self, worker: WorkerProcess, *, failed: bool = True) -> None:
        """Drop ``worker`` for good; ``failed``: it died or broke the framing (after
        :data:`MAX_FAILURES` of those, splits stay in threads)."""
        with self._lock:
            self._workers.discard(worker)
            if failed:
                self._failures += 1
        worker.stop()

    def _reap(self) -> None:
        """Stop workers idle for ``idle_exit_s``; the thread ends with the last one."""
        while not self._closed.wait(max(0.05, self.idle_exit_s / 4)):
            now = time.monotonic()
            with self._lock:  # so close() sees every idle worker in the queue
                idle = self._drain_idle()
                stale = [
                    w for w in idle if now - w.last_used >= self.idle_exit_s or self._stands_down()
                ]
                for worker in reversed(idle):  # drained newest first: put back oldest first
                    if worker not in stale:
                        self._idle.put(worker)
                self._workers.difference_update(stale)
                done = not self._workers and not self._starting
                if done:
                    self._reaper = None
            for worker in stale:
                worker.stop()
            if done:
                return

    def _drain_idle(self) -> list[WorkerProcess]:
        drained: list[WorkerProcess] = []
        with contextlib.suppress(queue.Empty):
            while True:
                drained.append(self._idle.get_nowait())
        return drained

    def close(self) -> None:
        """Stop every worker within :data:`STOP_DEADLINE_S`; splits then run in threads.
        Called at interpreter exit for the shared instance.

        Idle workers are told to stop (stdin closed), all at once, then one deadline for
        all, so a drain waits STOP_DEADLINE_S at most however many there are.  A worker
        in use is left to its caller (who stops it when the reply comes), and killed at
        the deadline if its split is still running: the caller then sees the pipe end
        and redoes the split in its thread.  In a forked child the workers are not its
        to stop.
        """
        if self._pid != os.getpid():
            return
        with self._lock:
            self._closed.set()
            workers = list(self._workers)
            self._workers.clear()
            idle = self._drain_idle()
        for worker in idle:
            worker.close_requests()
        deadline = time.monotonic() + STOP_DEADLINE_S
        for worker in workers:
            worker.reap(deadline)
        for worker in idle:
            worker.close_replies()


_shared: SplitProcesses | None = None
_shared_lock = threading.Lock()
_pools: weakref.WeakSet[SplitProcesses] = weakref.WeakSet()


def shared_processes() -> SplitProcesses:
    """The process-wide workers, shared by every flow (created on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SplitProcesses(default_processes(), size_chosen=explicitly_set())
            atexit.register(_shared.close)
        return _shared


def _after_fork_in_child() -> None:
    """A forked child (a preforking server, a multiprocessing pool) inherits the pipes
    to the parent's workers: parent and child would write requests to the same worker
    and read each other's replies.  The child lets go of them and starts afresh."""
    global _shared_lock
    _shared_lock = threading.Lock()
    forget_inherited_workers()
    for pool in list(_pools):
        pool._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
