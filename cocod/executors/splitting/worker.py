"""A split worker process: ``python -m cocod.executors.splitting.worker`` (see ``processes``).

It reads requests from stdin and writes replies to its own copy of stdout, each a 4-byte
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

import os
import pickle
import signal
import struct
from typing import Any, Protocol

from .recursive import RecursiveSplitter
from .separators import CustomLanguage

__all__ = ["Reader", "Writer", "main", "read_message", "write_message"]

_HEADER = struct.Struct("!I")
LanguagesKey = tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]


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


if __name__ == "__main__":
    main()
