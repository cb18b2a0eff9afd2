"""Watching one LocalFile source's root: file-system events turned into change hints.

The live updater starts this *before* its catch-up pass, so the readiness handshake must
mean "the watch is registered": :func:`watch_source` builds watchfiles' ``RustNotify`` (the
native watcher, which registers inotify/FSEvents watches in its constructor and buffers
events from then on) in a worker thread, and only then calls ``task_status.started()``.
``watchfiles.awatch`` builds the same object lazily inside its first iteration, on the
event loop, so it can neither say when it is registered nor keep a large tree's
registration off the loop.

Events are hints, never facts: each batch is classified in a worker thread (``stat`` can
block on network file systems) into file keys, folder keys (a folder created or moved in:
list just it) and "rescan" (the root came back, the watch failed, or a name could not be
decoded at the root). The consumer re-checks every key against the file system. With git
rules on (``LocalFile(respect_gitignore=True)``), a changed rules file hints what its
rules cover: a nested ``.gitignore`` its folder, the root's ``.gitignore`` or
``.git/info/exclude`` a full pass, so newly ignored files lose their rows and newly
unignored ones are indexed without waiting for the periodic rescan.

The root itself is watched by identity: a root deleted and re-created is a new directory
that the old watch never sees, so its (device, inode) is polled; a vanished root is polled
until it is back, then watched again with a rescan hint.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import anyio
import anyio.abc
import structlog
from watchfiles._rust_notify import RustNotify

from cocod.executors.local_file import LocalFileReader
from cocod.runtime.coordination import Backoff

log = structlog.get_logger(__name__)

WATCH_STEP_MS = 15
WATCH_DEBOUNCE_MS = 400
WATCH_TIMEOUT_MS = 1000
ROOT_POLL_SECONDS = 1.0

LOSSY = "\ufffd"
"""What a lossy watcher puts in place of bytes of a file name that are not valid UTF-8."""
UNDECODABLE = "Unable to decode path"
"""watchfiles' error for such a name when it does not decode lossily (1.x)."""


@dataclass
class ChangeHints:
    """One batch of hints: file keys, folder keys to list, or a full rescan."""

    keys: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)
    rescan: bool = False
    """The watch was (re)established or lost track: whatever happened was not seen."""
    full_pass: bool = False
    """The rules of the whole source changed (the root's ``.gitignore``): list it all."""

    def __bool__(self) -> bool:
        return bool(self.keys or self.dirs or self.rescan or self.full_pass)


HintSink = Callable[[ChangeHints], None]


async def watch_source(
    reader: LocalFileReader,
    on_hints: HintSink,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Watch ``reader``'s root until cancelled, passing each batch of hints to ``on_hints``.

    Ready (``task_status.started()``) once the first watch is registered, or once the root
    was found missing (then it is polled for, and a rescan is hinted when it is back).
    """
    root = await anyio.to_thread.run_sync(os.path.abspath, reader.root)
    is_ready = False
    backoff = Backoff()  # a watch that keeps failing (inotify limits) is retried slowly
    while True:
        try:
            opened = await anyio.to_thread.run_sync(_open_watch, root)
        except (OSError, RuntimeError) as e:  # inotify limits, WatchfilesRustInternalError
            delay = backoff.next_delay()
            log.warning("watcher.open_failed", root=root, error=str(e), retry_in=round(delay, 1))
            if not is_ready:
                task_status.started()
                is_ready = True
            on_hints(ChangeHints(rescan=True))
            await anyio.sleep(delay)
            continue
        if opened is None:  # the root is missing: poll for it
            if not is_ready:
                task_status.started()
                is_ready = True
            await anyio.sleep(ROOT_POLL_SECONDS)
            continue
        notify, identity = opened
        try:
            if is_ready:
                # Watching again (root back, re-created or watch failed): what happened
                # meanwhile was not seen.
                on_hints(ChangeHints(rescan=True))
            else:
                task_status.started()
                is_ready = True
            await _follow(notify, root, identity, reader, on_hints)
            backoff.reset()
        except (OSError, RuntimeError) as e:
            if UNDECODABLE in str(e):
                # watchfiles gives up on a name that is not UTF-8 and that watcher stays
                # broken: watch again (the rescan hint then finds the file), at most once
                # per poll interval, without counting it as a failing watch.
                log.info("watcher.undecodable_name", root=root, error=str(e))
                delay = ROOT_POLL_SECONDS
            else:
                delay = backoff.next_delay()
                log.warning("watcher.failed", root=root, error=str(e), retry_in=round(delay, 1))
            await anyio.sleep(delay)
        finally:
            notify.close()  # only after the watch thread returned (see _watch_step)


def _open_watch(root: str) -> tuple[RustNotify, tuple[int, int]] | None:
    """Register a recursive watch on ``root`` (blocking: one watch per folder)."""
    identity = _identity(root)
    if identity is None or not os.path.isdir(root):
        return None
    try:
        notify = RustNotify([root], False, False, 300, True, True)
    except FileNotFoundError:
        return None  # vanished between the stat and the registration
    return notify, identity


class _StopFlag:
    """What RustNotify.watch polls (``is_set``) each step: root changed, or cancelled."""

    def __init__(self, root_changed: threading.Event) -> None:
        self.root_changed = root_changed
        self.is_cancelled = False

    def is_set(self) -> bool:
        return self.is_cancelled or self.root_changed.is_set()


async def _follow(
    notify: RustNotify,
    root: str,
    identity: tuple[int, int],
    reader: LocalFileReader,
    on_hints: HintSink,
) -> None:
    """Pass on events until the root stops being the directory we registered."""
    root_changed = threading.Event()
    failure: list[Exception] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_root_identity, root, identity, root_changed)
        try:
            while not root_changed.is_set():
                raw = await _watch_step(notify, _StopFlag(root_changed))
                if isinstance(raw, set) and raw:
                    hints = await anyio.to_thread.run_sync(classify_changes, reader, root, raw)
                    if hints:
                        on_hints(hints)
        except (OSError, RuntimeError) as e:
            failure.append(e)  # raised below as itself, not inside an exception group
        tg.cancel_scope.cancel()
    if failure:
        raise failure[0]


async def _watch_step(notify: RustNotify, stop: _StopFlag) -> object:
    """One ``RustNotify.watch`` call in a worker thread.

    The thread cannot be interrupted, so cancelling sets the stop flag instead: the call
    returns within one step and the cancellation then proceeds (never abandoning a thread
    that still uses ``notify``). Its error is raised as is, not in an exception group.
    """

    async def stop_when_cancelled() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            stop.is_cancelled = True

    outcome: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_when_cancelled)
        try:
            outcome.append(
                await anyio.to_thread.run_sync(
                    notify.watch, WATCH_DEBOUNCE_MS, WATCH_STEP_MS, WATCH_TIMEOUT_MS, stop
                )
            )
        except (OSError, RuntimeError) as e:
            outcome.append(e)
        finally:
            tg.cancel_scope.cancel()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


async def _watch_root_identity(
    root: str, identity: tuple[int, int], root_changed: threading.Event
) -> None:
    """A root deleted and re-created is a new directory: the old watch sees nothing."""
    # Polling on purpose: there is no event for "this path now names another inode".
    while await anyio.to_thread.run_sync(_identity, root) == identity:  # noqa: ASYNC110
        await anyio.sleep(ROOT_POLL_SECONDS)
    log.warning("source.root_changed", root=root)
    root_changed.set()


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def classify_changes(
    reader: LocalFileReader, root: str, changes: Iterable[tuple[int, str]]
) -> ChangeHints:
    """File keys, folder keys and rescan needs for one batch of events (blocking: stats)."""
    hints = ChangeHints()
    for _, path in changes:
        if LOSSY in path and not os.path.lexists(path):
            # A name that is not valid UTF-8 arrives with U+FFFD in it and names nothing:
            # list its folder, where the real file will be found under its real name.
            parent = os.path.dirname(path)
            parent_key = reader.key_of(parent)
            if parent_key is None:
                hints.rescan = hints.rescan or os.path.abspath(parent) == root
            elif not reader.is_excluded_dir(parent_key):
                hints.dirs.add(parent_key)
            continue
        key = reader.key_of(path)
        if key is None:
            continue
        scope = reader.ignore_scope_of(key)
        if scope == "":
            hints.full_pass = True
        elif scope is not None:
            hints.dirs.add(scope)  # a nested .gitignore: what is in its folder may change
        if os.path.isdir(path):
            if not reader.is_excluded_dir(key):
                hints.dirs.add(key)  # a folder created or moved in: list just it
        elif reader.is_candidate(key) or (
            not os.path.exists(path) and not reader.is_excluded_dir(key)
        ):
            hints.keys.add(key)  # a file, or something deleted (perhaps a folder)
    return hints
