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

One inotify instance serves every doorbell of the process (a :class:`_Hub`, with one
reader thread that rings the doorbells owning each event's folder), so a daemon with 50
live sources uses 51 of the user's ``fs.inotify.max_user_instances`` (128 by default),
not 100. The hub and its thread exist while a doorbell is open; the last one to close
stops the thread (joined with a deadline). Linux only (inotify through libc):
:func:`open_doorbell` returns None elsewhere, or when inotify instances or watches run
out; the watcher then polls as before.
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
_IN_DONT_FOLLOW = 0x02000000  # a symlinked folder is not ours to watch (the walk skips it)
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
    | _IN_DONT_FOLLOW
)
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then name
_READ_SIZE = 64 * 1024

_lock = threading.Lock()
_hub: _Hub | None = None
_libc: ctypes.CDLL | None = None
STOP_TIMEOUT_S = 2.0


def _load_libc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.inotify_init1.argtypes = [ctypes.c_int]
            libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
            _libc = libc
        except (OSError, AttributeError):
            return None
    return _libc


class _Hub:
    """The process's inotify instance: folders → the doorbells that watch them."""

    def __init__(self, libc: ctypes.CDLL, fd: int) -> None:
        self.libc = libc
        self.fd = fd
        self.lock = threading.Lock()
        self.owners: dict[int, set[Doorbell]] = {}
        self.paths: dict[int, str] = {}
        self.bells = 0
        self._stop_r, self._stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._read, name="cocod-doorbell", daemon=True)
        self._thread.start()

    def add(self, bell: Doorbell, path: str) -> bool:
        """Watch one folder for ``bell`` (the caller holds ``lock``)."""
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), _MASK)
        if wd < 0:
            if ctypes.get_errno() == errno.ENOSPC:  # fs.inotify.max_user_watches reached
                bell.is_reliable = False
            return False  # gone already (ENOENT), not a folder, or no permission: skip it
        self.paths[wd] = path  # a folder moved in keeps its wd: its path is updated
        self.owners.setdefault(wd, set()).add(bell)
        bell.wds.add(wd)
        return True

    def remove(self, bell: Doorbell) -> None:
        """Forget ``bell``'s folders; unwatch those no other doorbell has (holds ``lock``)."""
        for wd in bell.wds:
            owners = self.owners.get(wd)
            if owners is None:
                continue
            owners.discard(bell)
            if not owners:
                del self.owners[wd]
                self.paths.pop(wd, None)
                self.libc.inotify_rm_watch(self.fd, wd)
        bell.wds.clear()

    def _read(self) -> None:
        """The reader thread: ring the owners of each event's folder until stopped."""
        poller = select.poll()  # not select(): descriptors above 1024 are common in a daemon
        poller.register(self.fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            try:
                ready = {fd for fd, _ in poller.poll()}
            except OSError:
                return
            if self._stop_r in ready:
                return
            with self.lock:
                self._drain()

    def _drain(self) -> None:
        while True:
            try:
                buf = os.read(self.fd, _READ_SIZE)
            except OSError:  # BlockingIOError: drained
                return
            if not buf:
                return
            offset = 0
            while offset + _EVENT.size <= len(buf):
                wd, mask, _, length = _EVENT.unpack_from(buf, offset)
                raw = buf[offset + _EVENT.size : offset + _EVENT.size + length]
                offset += _EVENT.size + length
                self._dispatch(wd, mask, raw)

    def _dispatch(self, wd: int, mask: int, raw: bytes) -> None:
        if wd == -1:  # IN_Q_OVERFLOW: whose events were dropped is unknown
            for everyone in list(self.owners.values()):
                for bell in everyone:
                    bell.ring()
            return
        owners = self.owners.get(wd)
        if not owners:
            return
        if mask & _IN_IGNORED:  # the folder is gone: its watch with it
            for bell in owners:
                bell.wds.discard(wd)
            del self.owners[wd]
            self.paths.pop(wd, None)
            return
        for bell in list(owners):
            bell.ring()
        if mask & _IN_ISDIR and mask & (_IN_CREATE | _IN_MOVED_TO):
            parent = self.paths.get(wd)
            if parent is not None:
                path = os.path.join(parent, os.fsdecode(raw.rstrip(b"\0")))
                for bell in list(owners):
                    if bell.should_watch(path):
                        bell.add_tree_locked(path)

    def stop(self) -> None:
        """Stop the reader (deadline :data:`STOP_TIMEOUT_S`), then close the instance."""
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        self._thread.join(STOP_TIMEOUT_S)
        for fd in (self.fd, self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class Doorbell:
    """One watcher's doorbell: the folders of its tree that ``should_watch`` keeps."""

    def __init__(self, hub: _Hub, should_watch: Callable[[str], bool]) -> None:
        self._hub = hub
        self.should_watch = should_watch
        self.wds: set[int] = set()
        self._rang = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        self.is_reliable = True
        """False once a folder could not be added for lack of watches: then the watcher
        must not block on this doorbell (it polls instead)."""
        self._closed = False

    # -- registration (blocking: runs in a worker thread or the hub's reader) --------------
    def add_tree(self, top: str) -> None:
        """Watch ``top`` and every folder under it that ``should_watch`` keeps."""
        with self._hub.lock:
            self.add_tree_locked(top)

    def add_tree_locked(self, top: str) -> None:
        if not self._hub.add(self, top):
            return
        for parent, dirs, _ in os.walk(top):
            kept = []
            for name in dirs:
                path = os.path.join(parent, name)
                if self.should_watch(path) and self._hub.add(self, path):
                    kept.append(name)
            dirs[:] = kept  # never walk into a pruned folder

    # -- ringing and waiting ---------------------------------------------------------------
    def ring(self) -> None:
        """Something changed under the tree (the hub's reader thread)."""
        self._rang = True
        self.wake()

    def wait(self, timeout: float) -> bool:
        """Until a ring (True), a :meth:`wake`, or ``timeout`` seconds (False); blocking,
        called from RustNotify's step in the watch thread."""
        if not self._rang:
            try:
                self._poller.poll(max(0, int(timeout * 1000)))
            except OSError:  # closed under us: behave as woken
                return False
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 512):
                pass
        rang, self._rang = self._rang, False
        return rang

    def poll(self) -> bool:
        """Did the tree ring since the last call (never blocks)."""
        return self.wait(0.0)

    def wake(self) -> None:
        """End a :meth:`wait` now (never blocks; any thread, until :meth:`close`)."""
        if self._closed:
            return  # its descriptor number may already name another file
        with contextlib.suppress(OSError):  # pipe full: a wake is pending anyway
            os.write(self._wake_w, b"x")

    @property
    def watched(self) -> int:
        return len(self.wds)

    def close(self) -> None:
        global _hub
        with _lock:
            if self._closed:
                return
            with self._hub.lock:
                self._closed = True  # under the hub's lock: the reader rings no more
                self._hub.remove(self)
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._hub.bells -= 1
            if self._hub.bells == 0:
                self._hub.stop()
                if _hub is self._hub:
                    _hub = None


def _get_hub() -> _Hub | None:
    """The process's hub, started on first use (the caller holds ``_lock``)."""
    global _hub
    if _hub is None:
        libc = _load_libc()
        if libc is None:
            return None
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            log.info("watcher.doorbell_unavailable", error=os.strerror(ctypes.get_errno()))
            return None
        _hub = _Hub(libc, fd)
    return _hub


def open_doorbell(root: str, should_watch: Callable[[str], bool]) -> Doorbell | None:
    """A doorbell over ``root``'s tree, or None: the watcher polls (see module doc)."""
    with _lock:
        hub = _get_hub()
        if hub is None:
            return None
        hub.bells += 1
        bell = Doorbell(hub, should_watch)
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
