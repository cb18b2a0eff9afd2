"""A split worker process: ``python -m cocod.executors.splitting.worker`` (see ``processes``),
and the parent's handle on one (:class:`WorkerProcess`).

The worker reads requests from stdin and writes replies to its own copy of stdout, each a 4-byte
big-endian length and a pickle; anything else printed goes to stderr, so nothing a library
prints can break the framing.  It exits at the end of stdin, so it never outlives its
parent (a killed parent closes the pipe).  Ctrl+C in a terminal reaches the whole process
group: the worker ignores it and lets its parent decide.

Request: ``(languages, text, chunk_size, min_chunk_size, chunk_overlap, language)`` where
``languages`` is a tuple of ``(name, separators, aliases)`` tuples.  Reply: ``("ok",
spans)``, ``("value_error", message)`` (bad sizes: the caller raises the same
ValueError), or ``("error", description)`` (the caller splits in its own thread, so the
error surfaces there exactly as it would have).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Protocol

from .recursive import RecursiveSplitter
from .separators import CustomLanguage

__all__ = [
    "STOP_DEADLINE_S",
    "Reader",
    "WorkerGone",
    "WorkerProcess",
    "Writer",
    "forget_inherited_workers",
    "main",
    "read_message",
    "write_message",
]

_HEADER = struct.Struct("!I")
LanguagesKey = tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]
STOP_DEADLINE_S = 2.0
"""A worker told to stop (its stdin closed) that has not exited by then is killed."""


class Reader(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


class Writer(Protocol):
    def write(self, data: memoryview, /) -> int | None: ...

    def flush(self) -> None: ...


def read_message(stream: Reader) -> Any:
    """One framed pickle, or ``None`` at the end of the stream (also mid-message).

    ``stream`` may be unbuffered (the parent's end: a raw pipe, which holds no lock, so a
    forked child may close its copy whatever the parent's threads were doing): a read
    returns what the pipe holds, so both parts are read until complete."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    payload = _read_exactly(stream, size)
    return None if payload is None else pickle.loads(payload)


def _read_exactly(stream: Reader, size: int) -> bytearray | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        got = stream.readinto(view[done:])
        if not got:
            return None
        done += got
    return buffer


def write_message(stream: Writer, message: Any) -> None:
    """Write one framed pickle; a raw pipe may take part of a write, so write the rest."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    for part in (_HEADER.pack(len(data)), data):
        view = memoryview(part)
        while view:
            written = stream.write(view)
            if written is None:  # a non-blocking pipe would; ours never are
                raise BlockingIOError("the split pipe is non-blocking")
            view = view[written:]
    stream.flush()


def _splitter(cache: dict[LanguagesKey, RecursiveSplitter], key: LanguagesKey) -> RecursiveSplitter:
    splitter = cache.get(key)
    if splitter is None:
        languages = [CustomLanguage(n, list(s), list(a)) for n, s, a in key]
        splitter = cache[key] = RecursiveSplitter(languages)
    return splitter


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = os.fdopen(0, "rb", closefd=False)  # buffered: it has the pipe to itself
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print goes to stderr, never into the replies
    cache: dict[LanguagesKey, RecursiveSplitter] = {}
    try:
        _serve(requests, replies, cache)
    except OSError:
        return  # the parent closed the pipes (it stopped us, or it is gone)


def _serve(requests: Reader, replies: Writer, cache: dict[LanguagesKey, RecursiveSplitter]) -> None:
    while True:
        request = read_message(requests)
        if request is None:
            return
        languages, text, chunk_size, min_chunk_size, chunk_overlap, language = request
        reply: tuple[str, Any]
        try:
            spans = _splitter(cache, languages).split_spans(
                text, chunk_size, min_chunk_size, chunk_overlap, language
            )
            reply = ("ok", spans)
        except ValueError as e:
            reply = ("value_error", str(e))
        except Exception as e:  # reported; the caller redoes the split in its own thread
            reply = ("error", f"{type(e).__name__}: {e}")
        write_message(replies, reply)


class WorkerGone(Exception):
    """The worker closed its pipe (it exited, or never started)."""


class WorkerProcess:
    """The parent's handle on one worker: start it, call it, stop it.  Only the thread
    holding it (taken from the pool's idle ones) uses its pipes."""

    __slots__ = ("__weakref__", "last_used", "process", "replies", "requests")

    def __init__(self) -> None:
        # The package's parent folder goes first on the child's path, so the worker
        # imports this very cocod however the parent found it; -P keeps ``-m`` from
        # putting the working directory ahead of it (a ``cocod/`` there, another
        # checkout, would be what runs, with other chunks or none).
        root = str(Path(__file__).resolve().parents[3])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "cocod.executors.splitting.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            bufsize=0,  # raw pipes: no lock a fork could inherit held (forget_inherited_workers)
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.requests: Any = self.process.stdin
        self.replies: Any = self.process.stdout
        self.last_used = time.monotonic()
        _live.add(self)

    def call(self, request: tuple[Any, ...]) -> tuple[str, Any]:
        try:
            write_message(self.requests, request)
            reply = read_message(self.replies)
        except (OSError, ValueError) as e:
            raise WorkerGone(str(e)) from e
        if reply is None:
            raise WorkerGone(f"exit status {self.process.poll()}")
        self.last_used = time.monotonic()
        return reply  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Tell it to stop and wait (killed past :data:`STOP_DEADLINE_S`); only whoever
        holds the worker (the thread that took it, or close() for the idle ones)."""
        self.close_requests()
        self.reap(time.monotonic() + STOP_DEADLINE_S)
        self.close_replies()

    def close_requests(self) -> None:
        """It exits at the end of its stdin, once any split in progress is answered."""
        with contextlib.suppress(OSError):
            self.requests.close()

    def close_replies(self) -> None:
        """Last, once it is dead, and only by whoever holds the worker: a thread with a
        split in flight reads this pipe, and closing it under that read would let the
        read land on whatever file reuses the descriptor."""
        with contextlib.suppress(OSError):
            self.replies.close()

    def forget(self) -> None:
        """In a forked child: close this process's copies of the pipes, without a word
        on them (they are the parent's), so the worker still sees its stdin end when the
        parent stops it."""
        for stream in (self.requests, self.replies):
            with contextlib.suppress(OSError):
                stream.close()

    def reap(self, deadline: float) -> None:
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_DEADLINE_S)


_live: weakref.WeakSet[WorkerProcess] = weakref.WeakSet()
_inherited: list[WorkerProcess] = []
"""A forked child's copies of the parent's workers: kept, so collecting them never waits
on or warns about a process that is not the child's."""


def forget_inherited_workers() -> None:
    """In a forked child: let go of every worker the parent started (see ``processes``).

    The child closes its copies of their pipes (raw pipes, so no lock a parent's thread
    held at the fork can block the close) and never reads or writes them."""
    inherited = list(_live)
    _live.clear()
    for worker in inherited:
        worker.forget()
    _inherited.extend(inherited)


if __name__ == "__main__":
    main()
