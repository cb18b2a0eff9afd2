"""Watching one LocalFile source's root: file-system events turned into change hints.

The live updater starts this *before* its catch-up pass, so the readiness handshake must
mean "the watch is registered": :func:`watch_source` builds watchfiles' ``RustNotify`` (the
native watcher, which registers inotify/FSEvents watches in its constructor and buffers
events from then on) in a worker thread, and only then calls ``task_status.started()``.
``watchfiles.awatch`` builds the same object lazily inside its first iteration, on the
event loop, so it can neither say when it is registered nor keep a large tree's
registration off the loop.

Events are hints, never facts (:mod:`~cocod.runtime.watch_hints` reads a batch): each
batch is classified in a worker thread (``stat`` can block on network file systems) into
file keys, folder keys (a folder created or moved in: list just it) and "rescan" (the root
came back, the watch failed, or a name could not be decoded at the root). The consumer
re-checks every key against the file system. With git rules on
(``LocalFile(respect_gitignore=True)``), a changed rules file hints what its rules cover: a
nested ``.gitignore`` its folder, the root's ``.gitignore`` or ``.git/info/exclude`` a full
pass, so newly ignored files lose their rows and newly unignored ones are indexed without
waiting for the periodic rescan.

The root itself is watched by identity: a root deleted and re-created is a new directory
that the old watch never sees, so its (device, inode) is checked once per
``ROOT_POLL_SECONDS`` (with a doorbell: at every ring, since the root's own deletion or
move rings, and every ``ROOT_NET_SECONDS`` as a safety net); a vanished root is polled
until it is back, then watched again with a rescan hint.

Idle cost and latency: ``RustNotify.watch`` polls its event set every step and calls our
stop flag's ``is_set`` each time. With a :mod:`~cocod.runtime.watch_doorbell` (Linux), the
flag blocks there until an inotify event under the tree, a cancel, or the root's identity
check is due, so an idle watcher wakes every 10 s instead of 67 times a second, and a
saved file is seen within about two :data:`ACTIVE_STEP_MS` steps. After a ring it keeps
stepping for :data:`SETTLE_SECONDS` (RustNotify's own thread may see the event later than
the doorbell on a loaded machine), and a batch that shows the doorbell missed a folder (a
change in a folder it does not watch, or a ``.gitignore`` that may un-ignore some) makes
it add them. Without a doorbell it steps every :data:`WATCH_STEP_MS`. The identity check
runs in the same flag (the watch's worker thread), so watching costs no other task,
thread hop or timeout round trip.

Polling: ``WATCHFILES_FORCE_POLLING`` and ``WATCHFILES_POLL_DELAY_MS`` are read the way
watchfiles' own ``watch()`` reads them (:func:`polling_settings`; on WSL it polls unless
told not to), since cocod builds ``RustNotify`` itself. A polling watcher has no doorbell:
on the mounts polling is for, inotify never rings.
"""

from __future__ import annotations

import functools
import os
import time

import anyio
import anyio.abc
import structlog
from watchfiles._rust_notify import RustNotify

from cocod.executors.local_file import LocalFileReader
from cocod.runtime.coordination import Backoff
from cocod.runtime.watch_doorbell import STOP_TIMEOUT_S, Doorbell, open_doorbell
from cocod.runtime.watch_hints import ChangeHints, HintSink, classify_changes, rewatch

log = structlog.get_logger(__name__)

__all__ = [
    "ChangeHints",
    "HintSink",
    "classify_changes",
    "polling_settings",
    "rewatch",
    "watch_source",
]

WATCH_STEP_MS = 15
"""RustNotify's step without a doorbell: every step is a wake-up, idle or not."""
ACTIVE_STEP_MS = 2
"""The step with a doorbell: only taken while the tree rang in the last ACTIVE_SECONDS."""
ACTIVE_SECONDS = 0.25
"""How long after a ring the flag steps at ACTIVE_STEP_MS: a batch still settling."""
SETTLE_SECONDS = 2.0
"""How long after a ring the flag keeps stepping at all (at WATCH_STEP_MS past
ACTIVE_SECONDS): RustNotify's own inotify thread may see the event later than the
doorbell does on a loaded machine, and that event must not wait a whole root check."""
WATCH_DEBOUNCE_MS = 400
ROOT_POLL_SECONDS = 1.0
ROOT_NET_SECONDS = 10.0
"""The root's timed identity check with a doorbell: every ring checks it too."""
NET_STEPS = 4
"""Steps at ACTIVE_STEP_MS after each timed root check (see _StopFlag.is_set)."""
POLL_DELAY_MS = 300
"""watchfiles' default poll interval when polling is forced."""
_NOT_POLLING = frozenset({"false", "disable", "disabled"})

UNDECODABLE = "Unable to decode path"
"""watchfiles' error for such a name when it does not decode lossily (1.x)."""


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
            opened = await anyio.to_thread.run_sync(_open_watch, root, reader)
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
        notify, identity, doorbell = opened
        try:
            if is_ready:
                # Watching again (root back, re-created or watch failed): what happened
                # meanwhile was not seen.
                on_hints(ChangeHints(rescan=True))
            else:
                task_status.started()
                is_ready = True
            await _follow(notify, _StopFlag(root, identity, doorbell), reader, on_hints)
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
            if doorbell is not None:
                # Locks, and the last one joins the hub's reader (its own deadline): a
                # thread, abandoned if it takes longer than that deadline and a second.
                with anyio.move_on_after(STOP_TIMEOUT_S + 1, shield=True):
                    await anyio.to_thread.run_sync(
                        doorbell.close, abandon_on_cancel=True, limiter=anyio.CapacityLimiter(1)
                    )


def _open_watch(
    root: str, reader: LocalFileReader
) -> tuple[RustNotify, tuple[int, int], Doorbell | None] | None:
    """Register a recursive watch on ``root`` (blocking: one watch per folder), and a
    doorbell beside it when one can be had."""
    identity = _identity(root)
    if identity is None or not os.path.isdir(root):
        return None
    force_polling, poll_delay_ms = polling_settings()
    try:
        notify = RustNotify([root], False, force_polling, poll_delay_ms, True, True)
    except FileNotFoundError:
        return None  # vanished between the stat and the registration
    if force_polling:
        log.info("watcher.polling", root=root, poll_delay_ms=poll_delay_ms)
        return notify, identity, None  # inotify would never ring on such a mount

    def should_watch(path: str) -> bool:
        key = reader.key_of(path)
        return key is not None and not reader.is_excluded_dir(key)

    try:
        doorbell = open_doorbell(root, should_watch)
    except Exception:
        notify.close()
        raise
    return notify, identity, doorbell


def polling_settings() -> tuple[bool, int]:
    """(force polling, poll delay in ms), read as watchfiles' ``watch()`` reads them: a
    non-empty ``WATCHFILES_FORCE_POLLING`` forces polling unless it is false/disable/
    disabled, an unset one polls on WSL only; ``WATCHFILES_POLL_DELAY_MS`` if decimal."""
    value = os.environ.get("WATCHFILES_FORCE_POLLING")
    force = value.lower() not in _NOT_POLLING if value else _is_wsl()
    delay = os.environ.get("WATCHFILES_POLL_DELAY_MS")
    return force, int(delay) if delay and delay.isdecimal() else POLL_DELAY_MS


@functools.cache
def _is_wsl() -> bool:
    """WSL's file systems from Windows give no inotify events (watchfiles' own test)."""
    uname = os.uname()
    return "microsoft-standard" in uname.release.lower() and uname.sysname.lower() == "linux"


class _StopFlag:
    """What RustNotify.watch calls (``is_set``) each step, in the watch thread: cancelled,
    or the root is no longer the directory we registered. With a doorbell it blocks while
    nothing happens (see the module doc)."""

    def __init__(self, root: str, identity: tuple[int, int], doorbell: Doorbell | None) -> None:
        self.root = root
        self.identity = identity
        self.doorbell = doorbell
        self.is_cancelled = False
        self.root_changed = False
        self.next_root_check = time.monotonic() + (
            ROOT_POLL_SECONDS if doorbell is None else ROOT_NET_SECONDS
        )
        self.active_until = 0.0
        self.settle_until = 0.0
        self.limiter = anyio.CapacityLimiter(1)
        """The watch call's own thread token: it blocks until an event, and holding one of
        the default limiter's 40 per watched source would starve every other blocking
        call of the process (file reads, listings) once a daemon watches 40 sources."""

    @property
    def step_ms(self) -> int:
        return WATCH_STEP_MS if self.doorbell is None else ACTIVE_STEP_MS

    def cancel(self) -> None:
        """From the event loop: the watch call returns at its next step."""
        self.is_cancelled = True
        if self.doorbell is not None:
            self.doorbell.wake()

    def is_set(self) -> bool:
        if self.is_cancelled or self.root_changed:
            return True
        now = time.monotonic()
        bell = self.doorbell
        rang = False
        if bell is not None and not bell.is_reliable:
            # Folders were left unwatched (no inotify watches left): poll at the step
            # this call would have had without a doorbell.
            time.sleep((WATCH_STEP_MS - ACTIVE_STEP_MS) / 1000)
        elif bell is not None:
            rang = bell.poll()
            if not rang and now >= self.active_until:
                # Settling: step at the polling rate. Quiet: sleep until the tree rings, a
                # cancel, or the root check is due.
                settling = now < self.settle_until
                step = (WATCH_STEP_MS - ACTIVE_STEP_MS) / 1000
                rang = bell.wait(step if settling else self.next_root_check - now)
                now = time.monotonic()
            if rang:
                self.active_until = now + ACTIVE_SECONDS
                self.settle_until = now + SETTLE_SECONDS
        if (rang or now >= self.next_root_check) and not self.is_cancelled:
            # The root's own deletion or move rings (it is watched too), so with a
            # doorbell the timed check is only a safety net; without one it is the way:
            # no event says "this path now names another inode".
            poll = ROOT_POLL_SECONDS if bell is None or not bell.is_reliable else ROOT_NET_SECONDS
            self.next_root_check = now + poll
            if not rang:
                # A few quick steps: RustNotify returns a batch only after two steps see
                # it unchanged, so one that came without a ring would wait another net.
                self.active_until = max(self.active_until, now + NET_STEPS * ACTIVE_STEP_MS / 1000)
            if _identity(self.root) != self.identity:
                self.root_changed = True
        return self.is_cancelled or self.root_changed


async def _follow(
    notify: RustNotify, stop: _StopFlag, reader: LocalFileReader, on_hints: HintSink
) -> None:
    """Pass on events until the root stops being the directory we registered."""
    while not stop.root_changed:
        raw = await _watch_step(notify, stop)
        if isinstance(raw, set) and raw:
            hints = await anyio.to_thread.run_sync(classify_changes, reader, stop.root, raw)
            if hints:
                on_hints(hints)
            if stop.doorbell is not None and stop.doorbell.is_reliable:
                await anyio.to_thread.run_sync(rewatch, stop.doorbell, reader, stop.root, raw)
    log.warning("source.root_changed", root=stop.root)


async def _watch_step(notify: RustNotify, stop: _StopFlag) -> object:
    """One ``RustNotify.watch`` call in a worker thread.

    The thread cannot be interrupted, so cancelling sets the stop flag instead: the call
    returns within one step and the cancellation then proceeds (never abandoning a thread
    that still uses ``notify``). Its error is raised as is, not in an exception group.
    """

    outcome: list[object] = []

    async def stop_when_cancelled() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            if not outcome:  # cancelled from outside, not by the call returning below
                stop.cancel()  # the flag lives on to the next call: only a real cancel

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_when_cancelled)
        try:
            outcome.append(
                await anyio.to_thread.run_sync(
                    notify.watch,
                    WATCH_DEBOUNCE_MS,
                    stop.step_ms,
                    0,
                    stop,
                    limiter=stop.limiter,
                )
            )
        except (OSError, RuntimeError) as e:
            outcome.append(e)
        finally:
            tg.cancel_scope.cancel()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
