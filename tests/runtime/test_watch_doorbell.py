"""The watcher's doorbell: an idle watch sleeps instead of polling, and a ring it misses
costs latency, never an event (real inotify, real files, real RustNotify)."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
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


def test_an_event_the_doorbell_misses_is_still_reported(
    tree: Path, bell: Doorbell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watcher, "ROOT_NET_SECONDS", 1.0)  # the net that reports it
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


def test_an_event_seen_late_after_a_ring_does_not_wait_for_the_net(
    tree: Path, bell: Doorbell
) -> None:
    """RustNotify's thread may see an event well after the doorbell rang (a loaded
    machine): the flag keeps stepping for SETTLE_SECONDS, not only ACTIVE_SECONDS."""
    notify = RustNotify([str(tree)], False, False, 300, True, True)
    try:
        flag = CountingFlag(tree, bell)
        bell.ring()  # the doorbell's share of an event ...
        late = 2 * watcher.ACTIVE_SECONDS
        # ... whose RustNotify share comes later (in a folder that does not ring)
        threading.Timer(late, (tree / "skip" / "late.md").write_text, ("x",)).start()
        changes = watch_for(notify, flag, watcher.ROOT_NET_SECONDS / 2)
    finally:
        notify.close()
    assert isinstance(changes, set), changes  # "stop": it waited for the 10 s net
    assert any(path.endswith("late.md") for _, path in changes)


def test_an_idle_watch_after_a_ring_sleeps_again(tree: Path, bell: Doorbell) -> None:
    """Settling after a ring ends: the flag then blocks until the root check again."""
    notify = RustNotify([str(tree)], False, False, 300, True, True)
    settled: list[int] = []
    try:
        flag = CountingFlag(tree, bell)
        bell.ring()
        timer = threading.Timer(watcher.SETTLE_SECONDS + 0.3, lambda: settled.append(flag.steps))
        timer.start()
        assert watch_for(notify, flag, watcher.SETTLE_SECONDS + 2.3) == "stop"
    finally:
        timer.cancel()
        notify.close()
    assert settled and settled[0] > 100  # it did step while settling
    assert flag.steps - settled[0] <= 3, (settled, flag.steps)  # then slept for 2 s


class Hints:
    """What a real watch_source passes on, with a wait for a key to show up."""

    def __init__(self) -> None:
        self.batches: list[watcher.ChangeHints] = []
        self.changed = anyio.Event()

    def __call__(self, hints: watcher.ChangeHints) -> None:
        self.batches.append(hints)
        self.changed.set()

    async def wait_for(self, predicate: Callable[[watcher.ChangeHints], bool]) -> None:
        while not any(predicate(h) for h in self.batches):
            self.changed = anyio.Event()
            await self.changed.wait()


def test_a_folder_a_gitignore_change_unignores_rings_at_once(tmp_path: Path) -> None:
    """The doorbell skipped the ignored folder; once the rules keep it, an edit in it
    must not wait for the 10 s net (RustNotify had the event, but no ring came)."""
    from cocod.executors.local_file import LocalFileReader
    from cocod.ops.sources import LocalFile

    root = tmp_path / "root"
    (root / ".git").mkdir(parents=True)
    (root / "sub" / "hidden" / "deep").mkdir(parents=True)
    (root / "sub" / ".gitignore").write_text("hidden/\n")
    reader = LocalFileReader(LocalFile(path=str(root), respect_gitignore=True))
    hints = Hints()

    async def main() -> None:
        with anyio.fail_after(watcher.ROOT_NET_SECONDS - 1):
            async with anyio.create_task_group() as tg:
                await tg.start(watcher.watch_source, reader, hints)
                (root / "sub" / ".gitignore").write_text("# nothing ignored\n")
                await hints.wait_for(lambda h: "sub" in h.dirs)
                # Past any settling after the .gitignore's ring: only a ring is quick now.
                await anyio.sleep(watcher.SETTLE_SECONDS + 0.5)
                (root / "sub" / "hidden" / "deep" / "new.md").write_text("x")
                await hints.wait_for(lambda h: "sub/hidden/deep/new.md" in h.keys)
                tg.cancel_scope.cancel()

    anyio.run(main)


def test_a_change_in_a_folder_the_doorbell_missed_makes_it_watch_that_folder(
    tmp_path: Path,
) -> None:
    """A batch with a change in a folder the doorbell does not hold (its walk missed it)
    adds that folder, with what is under it; excluded folders stay out."""
    from cocod.executors.local_file import LocalFileReader
    from cocod.ops.sources import LocalFile

    (tmp_path / "missed" / "below").mkdir(parents=True)
    (tmp_path / "node_modules" / "pkg").mkdir(parents=True)
    reader = LocalFileReader(LocalFile(path=str(tmp_path)))
    bell = open_doorbell(str(tmp_path), lambda path: not path.endswith(("missed", "node_modules")))
    assert bell is not None
    try:
        assert not bell.is_watching(str(tmp_path / "missed"))
        changes = [
            (1, str(tmp_path / "missed" / "below" / "a.md")),
            (1, str(tmp_path / "node_modules" / "pkg" / "b.js")),
        ]
        bell.should_watch = lambda path: not path.endswith("node_modules")  # rules changed
        watcher.rewatch(bell, reader, str(tmp_path), changes)
        assert bell.is_watching(str(tmp_path / "missed"))
        assert bell.is_watching(str(tmp_path / "missed" / "below"))
        assert not bell.is_watching(str(tmp_path / "node_modules"))
        assert not bell.is_watching(str(tmp_path / "node_modules" / "pkg"))
        (tmp_path / "missed" / "below" / "a.md").write_text("x")
        assert bell.wait(5.0)
    finally:
        bell.close()


def test_forced_polling_sees_changes_without_inotify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WATCHFILES_FORCE_POLLING (read as watchfiles reads it) polls, with no doorbell: on
    the mounts it is for, inotify never rings, and every change would wait the net."""
    from cocod.executors.local_file import LocalFileReader
    from cocod.ops.sources import LocalFile

    monkeypatch.setenv("WATCHFILES_FORCE_POLLING", "1")
    monkeypatch.setenv("WATCHFILES_POLL_DELAY_MS", "50")
    assert watcher.polling_settings() == (True, 50)
    reader = LocalFileReader(LocalFile(path=str(tmp_path)))
    hints = Hints()
    before = inotify_instances()

    async def main() -> None:
        with anyio.fail_after(watcher.ROOT_NET_SECONDS - 1):
            async with anyio.create_task_group() as tg:
                await tg.start(watcher.watch_source, reader, hints)
                assert inotify_instances() == before  # neither RustNotify's nor a doorbell
                await anyio.sleep(0.2)  # the poller's first snapshot is taken
                (tmp_path / "polled.md").write_text("x")
                await hints.wait_for(lambda h: "polled.md" in h.keys)
                tg.cancel_scope.cancel()

    anyio.run(main)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", False), ("0", True), ("false", False), ("Disabled", False), ("yes", True)],
)
def test_force_polling_reads_the_variable_like_watchfiles(
    value: str, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHFILES_FORCE_POLLING", value)
    monkeypatch.setenv("WATCHFILES_POLL_DELAY_MS", "soon")  # not decimal: the default
    monkeypatch.setattr(watcher, "_is_wsl", lambda: False)
    assert watcher.polling_settings() == (expected, watcher.POLL_DELAY_MS)


def test_adding_a_tree_does_not_silence_other_doorbells(tmp_path: Path) -> None:
    """The hub's lock is taken per folder, not across a walk: while one doorbell's rules
    check is stuck mid-walk (a slow file system), another one still rings."""
    (tmp_path / "big" / "stuck").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    other = open_doorbell(str(tmp_path / "other"), lambda path: True)
    assert other is not None
    in_walk, release = threading.Event(), threading.Event()

    def slow_rules(path: str) -> bool:
        in_walk.set()
        release.wait(30.0)
        return True

    opened: list[Doorbell | None] = []
    walker = threading.Thread(
        target=lambda: opened.append(open_doorbell(str(tmp_path / "big"), slow_rules))
    )
    walker.start()
    try:
        assert in_walk.wait(5.0)
        (tmp_path / "other" / "x.md").write_text("x")
        assert other.wait(5.0)  # rang while the other walk is still under way
        assert not opened
    finally:
        release.set()
        walker.join(10.0)
        other.close()
        for bell in opened:
            if bell is not None:
                bell.close()


def test_a_tree_moved_in_is_added_between_event_batches(tmp_path: Path) -> None:
    """The reader adds a large tree moved in a few folders at a time, draining events in
    between: another source's ring does not wait for the whole walk."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    staging = tmp_path / "staging"
    for i in range(400):
        (staging / f"d{i}").mkdir(parents=True)
    checked = []

    def slow_rules(path: str) -> bool:
        checked.append(path)
        time.sleep(0.005)  # 400 folders: about 2 s of walk
        return True

    one = open_doorbell(str(tmp_path / "one"), slow_rules)
    two = open_doorbell(str(tmp_path / "two"), lambda path: True)
    assert one is not None and two is not None
    try:
        checked.clear()
        os.rename(staging, tmp_path / "one" / "moved")
        assert one.wait(5.0)
        deadline = time.monotonic() + 5.0
        while not checked and time.monotonic() < deadline:
            time.sleep(0.01)
        (tmp_path / "two" / "x.md").write_text("x")
        assert two.wait(5.0)
        assert len(checked) < 400, "the ring waited for the whole walk"
        deadline = time.monotonic() + 30.0
        while one.watched < 402 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert one.watched == 402  # one, moved, and its 400 folders: none was dropped
    finally:
        one.close()
        two.close()


def test_a_reader_still_walking_at_stop_keeps_the_instance_until_it_exits(
    tmp_path: Path,
) -> None:
    """The last doorbell's close waits STOP_TIMEOUT_S for the reader; a reader still busy
    then must not find its inotify descriptor closed (the number may be reused)."""
    from cocod.runtime import watch_doorbell

    (tmp_path / "root").mkdir()
    in_walk, release = threading.Event(), threading.Event()

    def stuck_rules(path: str) -> bool:
        in_walk.set()
        release.wait(30.0)
        return True

    bell = open_doorbell(str(tmp_path / "root"), stuck_rules)
    assert bell is not None
    hub = watch_doorbell._hub
    assert hub is not None
    # Released after the deadline (not at once): a close that waited for the reader
    # (the lock held across its walk) would then find it gone and close everything.
    threading.Timer(2 * watch_doorbell.STOP_TIMEOUT_S, release.set).start()
    try:
        (tmp_path / "root" / "new").mkdir()  # the reader checks its rules: stuck there
        assert in_walk.wait(5.0)
        bell.close()  # gives up on the reader after its deadline
        assert os.readlink(f"/proc/self/fd/{hub.fd}") == "anon_inode:inotify"
    finally:
        release.set()
    deadline = time.monotonic() + 10.0
    while os.path.exists(f"/proc/self/fd/{hub.fd}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/self/fd/{hub.fd}")  # the reader closed it on its way out


_AT_THE_LIMIT = """
import json, os, sys, time
from cocod.runtime import watch_doorbell

root = sys.argv[1]
bell = watch_doorbell.open_doorbell(root, lambda path: True)
hub = watch_doorbell._hub
opened = bell.watched
for name in ("b", "c", "d"):
    os.mkdir(os.path.join(root, name))  # d is the one over the limit
deadline = time.monotonic() + 10
while bell.is_reliable and time.monotonic() < deadline:
    time.sleep(0.02)
with open(f"/proc/self/fdinfo/{hub.fd}") as f:
    held = sum(line.startswith("inotify wd:") for line in f)
os.mkdir(os.path.join(root, "e"))  # must not take a watch again
time.sleep(0.3)
print("RESULT", json.dumps({"opened": opened, "reliable": bell.is_reliable, "watched": bell.watched,
                  "held": held, "after": bell.watched}))
"""


def test_at_the_watch_limit_the_doorbell_gives_every_watch_back(tmp_path: Path) -> None:
    """ENOSPC for a folder created later: the doorbell removes all its watches (RustNotify
    needs them for the next folders) and the watcher polls. A real limit: a user
    namespace's own inotify watch limit, set to 4, leaves the machine's alone."""
    import json
    import shutil
    import subprocess

    unshare = shutil.which("unshare")
    probe = (
        subprocess.run([unshare or "unshare", "-Ur", "true"], capture_output=True, check=False)
        if unshare
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("needs unshare -Ur (user namespaces) for a watch limit of its own")
    (tmp_path / "a").mkdir()
    script = f'echo 4 > /proc/sys/user/max_inotify_watches && exec "{sys.executable}" -c "$0" "$1"'
    done = subprocess.run(
        [unshare, "-Ur", "sh", "-c", script, _AT_THE_LIMIT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.rpartition("RESULT ")[2])
    assert got["opened"] == 2  # the root and a: within the limit
    assert got["reliable"] is False
    assert got["held"] == 0, got  # every watch handed back, not only the failed one
    assert got["watched"] == 0 and got["after"] == 0
