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
folder moved) only costs latency, at most one root poll interval, never an event; the
watcher then adds the folders it learns were missed (:meth:`Doorbell.add_tree` and
:meth:`Doorbell.is_watching`). Excluded folders (``.git``, ``node_modules``) are not
watched here, so their churn does not wake the watcher; their events wait in
``RustNotify`` for the next step.

Watches: each folder the doorbell keeps costs one more inotify watch beside
``RustNotify``'s own, against the same ``fs.inotify.max_user_watches``. When the limit is
reached (ENOSPC), at open or for a folder created later, the doorbell gives up: it
removes every watch it holds, so ``RustNotify`` (which needs them for the folders that
come next) gets them back, and sets ``is_reliable`` to False, on which the watcher polls.

One inotify instance serves every doorbell of the process (a :class:`_Hub`, with one
reader thread that rings the doorbells owning each event's folder), so a daemon with 50
live sources uses 51 of the user's ``fs.inotify.max_user_instances`` (128 by default),
not 100. The hub's lock is held only per event batch and per folder added, never across
a walk: the reader adds the folders created under a tree a few at a time between event
batches, so a large tree copied in does not silence the other doorbells. The hub and its
thread exist while a doorbell is open; the last one to close stops the thread (joined
with a deadline; a thread that outlives it closes the instance itself). Linux only
(inotify through libc): :func:`open_doorbell` returns None elsewhere, or when inotify
instances or watches run out; the watcher then polls as before.
"""

from __future__ import annotations

import collections
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
_WALK_BATCH = 64
"""Folders the reader adds between two looks at its event queue."""

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
        self.wd_of: dict[str, int] = {}
        self.bells = 0
        self._walks: collections.deque[tuple[Doorbell, str]] = collections.deque()
        """Folders to add if their doorbell keeps them (reader only): created under a
        tree, or found under one being added (``should_watch`` may stat: not under the
        lock, and one folder at a time, so a wide folder is checked between batches)."""
        self._exit_lock = threading.Lock()
        self._exited = False
        self._orphaned = False
        self._stop_r, self._stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._read, name="cocod-doorbell", daemon=True)
        self._thread.start()

    def add(self, bell: Doorbell, path: str) -> bool:
        """Watch one folder for ``bell`` (the caller holds ``lock``)."""
        if bell.closed or not bell.is_reliable:
            return False
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), _MASK)
        if wd < 0:
            if ctypes.get_errno() == errno.ENOSPC:  # fs.inotify.max_user_watches reached
                self._give_up(bell, path)
            return False  # gone already (ENOENT), not a folder, or no permission: skip it
        old = self.paths.get(wd)  # a folder moved in keeps its wd: its path is updated
        if old is not None and old != path and self.wd_of.get(old) == wd:
            del self.wd_of[old]
        self.paths[wd] = path
        self.wd_of[path] = wd
        self.owners.setdefault(wd, set()).add(bell)
        bell.wds.add(wd)
        return True

    def _give_up(self, bell: Doorbell, path: str) -> None:
        """No watch left: hand back all of ``bell``'s, which RustNotify needs more (its
        watcher then polls); the caller holds ``lock``."""
        log.warning(
            "watcher.doorbell_gave_up",
            folder=path,
            released=len(bell.wds),
            detail="fs.inotify.max_user_watches reached; this watcher polls until it reopens",
        )
        self.remove(bell)
        bell.is_reliable = False  # after: whoever sees it False sees no watch held
        bell.wake()

    def remove(self, bell: Doorbell) -> None:
        """Forget ``bell``'s folders; unwatch those no other doorbell has (holds ``lock``)."""
        for wd in bell.wds:
            owners = self.owners.get(wd)
            if owners is None:
                continue
            owners.discard(bell)
            if not owners:
                self._forget(wd)
                self.libc.inotify_rm_watch(self.fd, wd)
        bell.wds.clear()

    def _forget(self, wd: int) -> None:
        self.owners.pop(wd, None)
        path = self.paths.pop(wd, None)
        if path is not None and self.wd_of.get(path) == wd:
            del self.wd_of[path]

    def _read(self) -> None:
        """The reader thread: ring the owners of each event's folder, and add the folders
        created under a tree, until stopped."""
        poller = select.poll()  # not select(): descriptors above 1024 are common in a daemon
        poller.register(self.fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        try:
            while True:
                try:  # never blocks while folders wait to be added
                    ready = {fd for fd, _ in poller.poll(0 if self._walks else None)}
                except OSError:
                    return
                if self._stop_r in ready:
                    return
                if self.fd in ready:
                    with self.lock:
                        self._drain()
                for _ in range(min(_WALK_BATCH, len(self._walks))):
                    self._walk_one(*self._walks.popleft())
        finally:
            with self._exit_lock:
                self._exited = True
                orphaned = self._orphaned
            if orphaned:  # stop() gave up waiting: the descriptors are ours to close
                self._close_fds()

    def _walk_one(self, bell: Doorbell, path: str) -> None:
        try:
            if bell.should_watch(path):
                self._walks.extend((bell, child) for child in bell.visit(path))
        except Exception:  # a failing rule check must not silence every doorbell
            log.exception("watcher.doorbell_add_failed", folder=path)

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
            self._forget(wd)
            return
        for bell in list(owners):
            bell.ring()
        if mask & _IN_ISDIR and mask & (_IN_CREATE | _IN_MOVED_TO):
            parent = self.paths.get(wd)
            if parent is not None:
                path = os.path.join(parent, os.fsdecode(raw.rstrip(b"\0")))
                self._walks.extend((bell, path) for bell in owners)

    def stop(self) -> None:
        """Stop the reader (deadline :data:`STOP_TIMEOUT_S`), then close the instance; a
        reader still busy then closes it as it exits (its next read must not land on a
        descriptor number reused meanwhile)."""
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        self._thread.join(STOP_TIMEOUT_S)
        with self._exit_lock:
            if not self._exited:
                self._orphaned = True
                log.warning("watcher.doorbell_stop_timeout", timeout_s=STOP_TIMEOUT_S)
                return
        self._close_fds()

    def _close_fds(self) -> None:
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
        """False once a folder could not be added for lack of watches: the doorbell then
        holds none, and the watcher must not block on it (it polls instead)."""
        self.closed = False

    # -- registration (blocking: runs in a worker thread or the hub's reader) --------------
    def add_tree(self, top: str) -> None:
        """Watch ``top`` and every folder under it that ``should_watch`` keeps (again:
        adding a watched folder costs no watch). The hub's lock is taken per folder."""
        pending = self.visit(top)
        while pending:
            path = pending.pop()
            if self.should_watch(path):
                pending.extend(self.visit(path))

    def visit(self, folder: str) -> list[str]:
        """Add ``folder``; return its subfolders, to check and add next (none once it
        failed, the doorbell closed or gave up). Not the symlinked ones: they lead out."""
        with self._hub.lock:
            if not self._hub.add(self, folder):
                return []
        try:
            with os.scandir(folder) as entries:
                return [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:
            return []

    def is_watching(self, folder: str) -> bool:
        """Does this doorbell hold a watch for ``folder`` (as last added under that path)."""
        with self._hub.lock:
            return self._hub.wd_of.get(folder) in self.wds

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
        if self.closed:
            return  # its descriptor number may already name another file
        with contextlib.suppress(OSError):  # pipe full: a wake is pending anyway
            os.write(self._wake_w, b"x")

    @property
    def watched(self) -> int:
        return len(self.wds)

    def close(self) -> None:
        global _hub
        with _lock:
            if self.closed:
                return
            with self._hub.lock:
                self.closed = True  # under the hub's lock: the reader rings no more
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
