"""The watcher's doorbell: an idle watch sleeps instead of polling, and a ring it misses
costs latency, never an event (real inotify, real files, real RustNotify)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from watchfiles._rust_notify import RustNotify

from cocod.runtime import watcher
from cocod.runtime.watch_doorbell import Doorbell, open_doorbell

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "skip").mkdir()
    (tmp_path / "a" / "b" / "f.md").write_text("x")
    return tmp_path


@pytest.fixture
def bell(tree: Path) -> Iterator[Doorbell]:
    opened = open_doorbell(str(tree), lambda path: not path.endswith("/skip"))
    assert opened is not None
    yield opened
    opened.close()


def test_rings_for_a_write_deep_in_the_tree_and_is_quiet_otherwise(
    tree: Path, bell: Doorbell
) -> None:
    assert not bell.wait(0.2)
    (tree / "a" / "b" / "f.md").write_text("changed")
    assert bell.wait(5.0)
    assert not bell.poll()  # drained: one write is one ring


def test_rings_in_a_folder_created_after_it_opened(tree: Path, bell: Doorbell) -> None:
    (tree / "new" / "deeper").mkdir(parents=True)
    assert bell.wait(5.0)  # the folder's creation; the doorbell now watches it too
    while bell.wait(0.2):
        pass
    (tree / "new" / "deeper" / "g.md").write_text("x")
    assert bell.wait(5.0)


def test_pruned_folders_do_not_ring(tree: Path, bell: Doorbell) -> None:
    (tree / "skip" / "churn.md").write_text("x")
    assert not bell.wait(0.5)


def test_wake_ends_a_wait_from_another_thread(bell: Doorbell) -> None:
    threading.Timer(0.1, bell.wake).start()
    started = time.monotonic()
    assert not bell.wait(30.0)
    assert time.monotonic() - started < 20.0  # woken, not timed out


def inotify_instances() -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed
            count += os.readlink(fd) == "anon_inode:inotify"
    return count


def test_doorbells_share_one_inotify_instance_and_ring_apart(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    before = inotify_instances()
    first = open_doorbell(str(tmp_path / "one"), lambda path: True)
    second = open_doorbell(str(tmp_path / "two"), lambda path: True)
    assert first is not None and second is not None
    try:
        assert inotify_instances() - before <= 1
        (tmp_path / "two" / "x.md").write_text("x")
        assert second.wait(5.0)
        assert not first.wait(0.3)
    finally:
        first.close()
        second.close()
    assert inotify_instances() == before  # the last doorbell closed the shared instance


class CountingFlag(watcher._StopFlag):
    """The watcher's own flag, counting how often RustNotify stepped."""

    def __init__(self, root: Path, bell: Doorbell | None) -> None:
        identity = watcher._identity(str(root))
        assert identity is not None
        super().__init__(str(root), identity, bell)
        self.steps = 0

    def is_set(self) -> bool:
        self.steps += 1
        return super().is_set()


def watch_for(notify: RustNotify, flag: CountingFlag, seconds: float) -> object:
    """One watch call, cancelled through the flag after ``seconds`` if nothing came."""
    timer = threading.Timer(seconds, flag.cancel)
    timer.start()
    try:
        return notify.watch(watcher.WATCH_DEBOUNCE_MS, flag.step_ms, 0, flag)
    finally:
        timer.cancel()


def test_an_idle_watch_steps_about_once_per_root_poll(tree: Path, bell: Doorbell) -> None:
    notify = RustNotify([str(tree)], False, False, 300, True, True)
    try:
        with_bell = CountingFlag(tree, bell)
        assert watch_for(notify, with_bell, 2.0) == "stop"
        polling = CountingFlag(tree, None)
        assert watch_for(notify, polling, 2.0) == "stop"
    finally:
        notify.close()
    # Polling steps every 15 ms (about 130 steps in 2 s); the doorbell's flag sleeps
    # between root checks (one a second), plus the step that sees the cancel.
    assert with_bell.steps <= 6, with_bell.steps
    assert polling.steps > 4 * with_bell.steps, (polling.steps, with_bell.steps)


def test_an_event_the_doorbell_misses_is_still_reported(tree: Path, bell: Doorbell) -> None:
    notify = RustNotify([str(tree)], False, False, 300, True, True)
    try:
        flag = CountingFlag(tree, bell)
        time.sleep(0.1)
        (tree / "skip" / "unwatched.md").write_text("x")  # RustNotify sees it; no ring
        changes = watch_for(notify, flag, 20.0)
    finally:
        notify.close()
    assert isinstance(changes, set)
    assert any(path.endswith("unwatched.md") for _, path in changes)


def test_watchers_do_not_hold_the_default_thread_tokens(tmp_path: Path) -> None:
    """A watch call blocks until an event: each watched source must not keep one of the
    default limiter's tokens, or a daemon watching 40 sources could read no file."""
    from cocod.executors.local_file import LocalFileReader
    from cocod.ops.sources import LocalFile

    roots = []
    for i in range(3):
        (tmp_path / f"r{i}").mkdir()
        roots.append(LocalFileReader(LocalFile(path=str(tmp_path / f"r{i}"))))

    async def main() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 2
        with anyio.fail_after(30):  # starved: the third watcher never starts
            async with anyio.create_task_group() as tg:
                for reader in roots:
                    await tg.start(watcher.watch_source, reader, lambda hints: None)
                await anyio.sleep(0.5)  # every watch call is in its thread now
                assert await anyio.to_thread.run_sync(lambda: 42) == 42
                tg.cancel_scope.cancel()

    anyio.run(main)


def test_the_root_moved_away_is_noticed_by_its_ring(tmp_path: Path) -> None:
    """The timed identity check is 10 s apart with a doorbell: the root's own move rings."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    bell = open_doorbell(str(root), lambda path: True)
    assert bell is not None
    notify = RustNotify([str(root)], False, False, 300, True, True)
    try:
        flag = CountingFlag(root, bell)
        threading.Timer(0.3, os.rename, (root, tmp_path / "elsewhere")).start()
        assert watch_for(notify, flag, 5.0) == "stop"  # before the 10 s check was due
    finally:
        notify.close()
        bell.close()
    assert flag.root_changed and not flag.is_cancelled


def test_a_symlinked_folder_outside_the_tree_does_not_ring(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "link").symlink_to(outside, target_is_directory=True)
    bell = open_doorbell(str(tmp_path / "tree"), lambda path: True)
    assert bell is not None
    try:
        (outside / "x.md").write_text("x")
        assert not bell.wait(0.5)
    finally:
        bell.close()
