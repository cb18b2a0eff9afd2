"""The default walk on the compiled helper (``cocod/_native.c``), on several threads at once.

Why: a full pass of a large source is mostly its stat() walk. In Python each file costs
a ``DirEntry``, a ``stat_result`` and the loop around them; the helper reads a folder and
stats its files in C with the GIL released, so the walk costs little more than its system
calls, and two walker threads run on two cores. At 50,000 files on a 2-core VM: 130 ms in
the Python walk (:func:`~cocod.executors.file_listing.list_plain`), 61 ms here, of which
the kernel's stat calls are most (60 ms of system time per walk on one thread).

It lists exactly what the Python walk lists, with the same filters in the same order of
tests (the helper only applies a pattern set that is a plain list of name suffixes, the
common ``*.md``, ``*.py`` case; everything else is decided here by the same
:class:`~cocod.executors.file_listing.Walk` methods), and the same handling of folders
that vanish or cannot be read. Only the order of the returned dict differs.

The helper is optional (:mod:`cocod.native`): where it was not built, or with
``COCOD_NATIVE=0``, the Python walk is used.

The threads beyond the caller's are counted against the source's thread limiter
(:func:`borrowed_walker_threads`): a daemon whose instances all start their catch-up at
once walks each on one thread rather than start a thread per instance beyond its bound.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import structlog

from cocod import native
from cocod.engine.interfaces import Ordinal
from cocod.executors.file_names import display_name

if TYPE_CHECKING:
    from cocod.executors.file_listing import Walk
    from cocod.executors.gitignore import IgnoreChain

log = structlog.get_logger()


HELPER: ModuleType | None = native.HELPER if sys.getfilesystemencoding() == "utf-8" else None
"""The helper, where names are UTF-8 (its suffix test on bytes equals the str test there)."""

WALKER_THREADS = max(1, min(2, os.cpu_count() or 1))
"""Threads that walk one listing. Measured at 50,000 files on 2 cores: 87 ms with one,
61 ms with two, 59 ms with three; each stat runs without the GIL, so a second thread
overlaps the system calls."""

PARALLEL_MIN_FOLDERS = 8
"""A second thread joins once this many folders wait: a small tree is walked alone."""


@contextmanager
def borrowed_walker_threads(limiter: anyio.CapacityLimiter | None) -> Iterator[int]:
    """(On the event loop, just before the walk's own ``to_thread`` call) take a token of
    ``limiter`` (None: anyio's default) for each helper thread the walk may start, only
    while one more stays free for the walk's own thread, so the walk never waits for
    its helpers and never holds a token it waits beside. Yields how many it took; they
    are given back when the block ends; none where the helper was not built (the Python
    walk runs on one thread)."""
    if HELPER is None:
        yield 0
        return
    bound = limiter if limiter is not None else anyio.to_thread.current_default_thread_limiter()
    borrowers: list[object] = []
    try:
        while len(borrowers) < WALKER_THREADS - 1 and bound.available_tokens >= 2:
            borrower = object()
            bound.acquire_on_behalf_of_nowait(borrower)
            borrowers.append(borrower)
        yield len(borrowers)
    finally:
        for borrower in borrowers:
            bound.release_on_behalf_of(borrower)


Folder = tuple[str, str, "IgnoreChain | None"]
"""(path, key prefix ending in '/' or "", the ignore chain of its parent)."""

_Listed = tuple[int, list[str], list[str], list[str]]
"""The helper's ``list_folder``: (open fd, sub-folders, regular files, symlinks)."""


def available() -> bool:
    return HELPER is not None


def list_native(walk: Walk, start_path: str, start_prefix: str) -> dict[str, Ordinal]:
    """:func:`~cocod.executors.file_listing.list_plain` on the helper."""
    suffixes = _byte_suffixes(walk)
    out: dict[str, Ordinal] = {}
    pending: list[Folder] = [(start_path, start_prefix, walk.start_chain)]
    state = _SharedWalk(walk, suffixes, out, pending)
    state.visit(pending.pop())  # the root alone: its errors are the listing's errors
    allowed = WALKER_THREADS - 1 if walk.helper_threads is None else walk.helper_threads
    if len(pending) >= PARALLEL_MIN_FOLDERS and allowed > 0:
        helpers = [
            threading.Thread(target=state.run, name="cocod-walk", daemon=True)
            for _ in range(allowed)
        ]
        for t in helpers:
            t.start()
        try:
            state.run()
        finally:
            for t in helpers:
                t.join()
    else:
        state.run()
    if state.error is not None:
        raise state.error
    return out


def _byte_suffixes(walk: Walk) -> tuple[bytes, ...] | None:
    """The suffixes for the helper to test, or None when Python must test each name.

    Git rules need every name (a ``.gitignore`` among them), and a suffix that cannot be
    encoded strictly (a lone surrogate) is tested in Python, where it means what it says.
    """
    suffixes = walk.filter.name_suffixes
    if suffixes is None or walk.ignore is not None:
        return None
    try:
        return tuple(s.encode("utf-8") for s in suffixes)
    except UnicodeEncodeError:
        return None


class _SharedWalk:
    """The folders left to walk and what was found, shared by the walker threads."""

    def __init__(
        self,
        walk: Walk,
        suffixes: tuple[bytes, ...] | None,
        out: dict[str, Ordinal],
        pending: list[Folder],
    ) -> None:
        self.walk = walk
        self.suffixes = suffixes
        self.out = out
        self.pending = pending
        self.busy = 0
        self.error: BaseException | None = None
        self.cond = threading.Condition()

    def run(self) -> None:
        """Take folders until none is left and no other thread can add one."""
        while True:
            with self.cond:
                while not self.pending and self.busy and self.error is None:
                    self.cond.wait()
                if not self.pending or self.error is not None:
                    self.cond.notify_all()
                    return
                folder = self.pending.pop()
                self.busy += 1
            try:
                self.visit(folder)
            except BaseException as e:
                with self.cond:
                    self.error = self.error or e
            finally:
                with self.cond:
                    self.busy -= 1
                    self.cond.notify_all()

    def visit(self, folder: Folder) -> None:
        """List one folder: its files into ``out``, its sub-folders onto ``pending``."""
        dir_path, prefix, parent_chain = folder
        walk = self.walk
        listed = self._open(dir_path, prefix)
        if listed is None:
            return
        fd, folders, files, links = listed
        try:
            chain = (
                walk.enter_names(parent_chain, prefix, [*files, *links])
                if walk.ignore is not None
                else None
            )
            if self.suffixes is None:  # the helper listed every file; the filters run here
                assert HELPER is not None
                HELPER.stat_files(fd, prefix, self._kept(files, prefix, chain), self.out)
        finally:
            os.close(fd)
        for name in links:
            if self.suffixes is not None or self._name_passes(name):
                log.debug("source.symlink_skipped", key=display_name(prefix + name))
        subfolders = [
            (os.path.join(dir_path, name), rel + "/", chain)
            for name in folders
            if not walk.skips_dir(rel := prefix + name, chain)
        ]
        if subfolders:
            with self.cond:
                self.pending.extend(subfolders)
                self.cond.notify_all()

    def _open(self, dir_path: str, prefix: str) -> _Listed | None:
        """The helper's listing, or None where the Python walk skips the folder."""
        from cocod.executors.file_listing import unreadable_folder

        with self.cond:
            self.walk.on_scandir()
        assert HELPER is not None
        try:
            if self.suffixes is None:
                listed: _Listed = HELPER.list_folder(dir_path, None)
            else:  # the helper filters by suffix and stats in the same call
                listed = HELPER.list_folder(dir_path, self.suffixes, prefix, self.out)
        except (FileNotFoundError, NotADirectoryError):
            if not prefix:
                self.walk.is_root_ok()
            return None
        except OSError as e:
            unreadable_folder(dir_path, prefix, e)
            return None
        return listed

    def _name_passes(self, name: str) -> bool:
        """The Python walk's name test, which a skipped symlink had to pass to be logged."""
        filt = self.walk.filter
        if filt.name_suffixes is not None:
            return name.endswith(filt.name_suffixes)
        return not filt.name_only or filt.is_included_name(name)

    def _kept(self, files: list[str], prefix: str, chain: IgnoreChain | None) -> list[str]:
        """The names the patterns and git rules keep, tested as the Python walk tests them."""
        walk = self.walk
        filt = walk.filter
        suffixes = filt.name_suffixes
        by_name = filt.is_included_name if filt.name_only else None
        ignore = walk.ignore if chain is not None else None
        kept: list[str] = []
        for name in files:
            if suffixes is not None:
                if not name.endswith(suffixes):
                    continue
            elif by_name is not None and not by_name(name):
                continue
            rel = prefix + name
            if by_name is None and not filt.is_included_file(rel):
                continue
            if (
                ignore is not None
                and chain is not None
                and ignore.is_ignored(chain, rel, is_dir=False)
            ):
                continue
            kept.append(name)
        return kept
