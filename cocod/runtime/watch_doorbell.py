"""A blocking "something changed under this tree" signal, so an idle watcher sleeps.

Why: watchfiles' ``RustNotify.watch`` has no blocking wait; it sleeps ``step_ms``, then
checks its event set, forever. At a 15 ms step that is 67 wake-ups a second of an idle
watcher (0.27 % of a core measured on this 2-core machine: about 40 µs a step, most of it
taking the GIL back), and a saved file waits on average 1.5 steps before it is seen. The
step cannot be both short (latency) and long (idle CPU). ``RustNotify`` does call the
``stop_event.is_set`` we give it once per step, in the watch thread: the watcher's flag
blocks there, in :meth:`Doorbell.wait`, until this doorbell rings (an inotify event under
the tree), the watcher is cancelled (:meth:`Doorbell.wake`) or the root's identity is due
a check. So an idle watcher wakes once per root poll, and a busy one steps at a few ms.

The doorbell is only a wake-up: ``RustNotify`` still collects and reports every event,
so a ring that is missed (a folder the doorbell could not add, a stale path after a
folder moved) only costs latency, at most one root poll interval, never an event.
Excluded folders (``.git``, ``node_modules``) are not watched here, so their churn does
not wake the watcher; their events wait in ``RustNotify`` for the next step.

Linux only (inotify through libc). :func:`open_doorbell` returns None elsewhere, when the
user's inotify instances or watches run out, or when this process already holds
:data:`MAX_DOORBELLS` (each is one more inotify instance beside ``RustNotify``'s, out of
``fs.inotify.max_user_instances``, 128 by default): the watcher then polls as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import select
import struct
import sys
import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

MAX_DOORBELLS = 16
"""Doorbells one process holds at most; watchers beyond them poll (see module doc)."""

_IN_MODIFY = 0x2
_IN_ATTRIB = 0x4
_IN_CLOSE_WRITE = 0x8
_IN_MOVED_FROM = 0x40
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_IGNORED = 0x8000
_IN_ONLYDIR = 0x01000000
_IN_ISDIR = 0x40000000
_MASK = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
    | _IN_ONLYDIR
)
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then name
_READ_SIZE = 64 * 1024

_lock = threading.Lock()
_open_count = 0
_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.inotify_init1.argtypes = [ctypes.c_int]
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            _libc = libc
        except (OSError, AttributeError):
            return None
    return _libc


class Doorbell:
    """One inotify instance watching every folder of a tree that ``should_watch`` keeps."""

    def __init__(self, libc: ctypes.CDLL, fd: int, should_watch: Callable[[str], bool]) -> None:
        self._libc = libc
        self._fd = fd
        self._should_watch = should_watch
        self._paths: dict[int, str] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.is_reliable = True
        """False once a folder could not be added for lack of watches: then the watcher
        must not block on this doorbell (it polls instead)."""
        self._closed = False

    # -- registration (blocking: runs in the watch's worker thread) ------------------------
    def add_tree(self, top: str) -> None:
        """Watch ``top`` and every folder under it that ``should_watch`` keeps."""
        if not self._add(top):
            return
        for parent, dirs, _ in os.walk(top):
            kept = []
            for name in dirs:
                path = os.path.join(parent, name)
                if self._should_watch(path) and self._add(path):
                    kept.append(name)
            dirs[:] = kept  # never walk into a pruned folder

    def _add(self, path: str) -> bool:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), _MASK)
        if wd >= 0:
            self._paths[wd] = path  # a folder moved in keeps its wd: its path is updated
            return True
        err = ctypes.get_errno()
        if err == errno.ENOSPC:  # fs.inotify.max_user_watches reached
            self.is_reliable = False
        return False  # gone already (ENOENT), not a folder, or no permission: skip it

    # -- waiting (blocking: called from RustNotify's step, in the watch thread) -----------
    def wait(self, timeout: float) -> bool:
        """Until an event (True), a :meth:`wake`, or ``timeout`` seconds (False)."""
        try:
            readable, _, _ = select.select([self._fd, self._wake_r], [], [], max(0.0, timeout))
        except (OSError, ValueError):  # closed under us: behave as woken
            return False
        if self._wake_r in readable:
            self._drain_wakes()
        return self._fd in readable and self._drain_events()

    def poll(self) -> bool:
        """Did the tree ring since the last call (never blocks)."""
        return self.wait(0.0)

    def wake(self) -> None:
        """End a :meth:`wait` now (never blocks; the loop thread, before :meth:`close`)."""
        if self._closed:
            return  # its descriptor number may already name another file
        with contextlib.suppress(OSError):  # pipe full: a wake is pending anyway
            os.write(self._wake_w, b"x")

    def _drain_wakes(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except OSError:
            pass

    def _drain_events(self) -> bool:
        rang = False
        while True:
            try:
                buf = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return rang
            except OSError:
                return rang
            if not buf:
                return rang
            rang = True
            offset = 0
            while offset + _EVENT.size <= len(buf):
                wd, mask, _, length = _EVENT.unpack_from(buf, offset)
                raw = buf[offset + _EVENT.size : offset + _EVENT.size + length]
                offset += _EVENT.size + length
                if mask & _IN_IGNORED:
                    self._paths.pop(wd, None)
                elif mask & _IN_ISDIR and mask & (_IN_CREATE | _IN_MOVED_TO):
                    parent = self._paths.get(wd)
                    if parent is not None:
                        path = os.path.join(parent, os.fsdecode(raw.rstrip(b"\0")))
                        if self._should_watch(path):
                            self.add_tree(path)

    @property
    def watched(self) -> int:
        return len(self._paths)

    def close(self) -> None:
        global _open_count
        if self._closed:
            return
        self._closed = True
        for fd in (self._fd, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with _lock:
            _open_count -= 1


def open_doorbell(root: str, should_watch: Callable[[str], bool]) -> Doorbell | None:
    """A doorbell over ``root``'s tree, or None: the watcher polls (see module doc)."""
    global _open_count
    libc = _load_libc()
    if libc is None:
        return None
    with _lock:
        if _open_count >= MAX_DOORBELLS:
            return None
        _open_count += 1
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        with _lock:
            _open_count -= 1
        log.info("watcher.doorbell_unavailable", error=os.strerror(ctypes.get_errno()))
        return None
    bell = Doorbell(libc, fd, should_watch)
    try:
        bell.add_tree(root)
    except OSError as e:
        bell.close()
        log.info("watcher.doorbell_unavailable", error=str(e))
        return None
    if not bell.is_reliable or bell.watched == 0:
        log.info("watcher.doorbell_unavailable", error="not every folder could be watched")
        bell.close()
        return None
    return bell
