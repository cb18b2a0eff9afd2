"""Walking a LocalFile root: one ``os.scandir`` per folder, at most one stat per file.

Two walks, chosen by ``LocalFile(follow_symlinks=...)``:

* **Not following** (the default): entries are classified by the ``d_type`` that
  ``scandir`` already returned (``is_dir(follow_symlinks=False)``), so folders cost no
  stat; symlinks, to files or folders, are skipped; a regular file is stat'ed only when
  the patterns include it. No symlink is ever crossed, so no loop is possible.
* **Following**: a symlink is resolved and kept only when its target stays inside the
  root (``realpath``); folders are identified by (st_dev, st_ino) and walked once, and a
  file reachable by several paths is listed once, under the path that sorts first (folders
  are popped from a heap in key order, so the first visit of a folder is by its smallest
  path; a link back to an ancestor, a loop, is one more such second visit and is skipped).

Folders matched by an exclude pattern, or ignored by git's rules when the source respects
them (:mod:`cocod.executors.gitignore`), are never opened: listing cost does not depend on
what is inside ``node_modules/`` or ``build/``. Each folder's ignore chain is derived from
its parent's and the ``.gitignore`` found among its own entries.
"""

from __future__ import annotations

import heapq
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from cocod.engine.interfaces import Ordinal
from cocod.errors import SourceError
from cocod.executors import native_walk
from cocod.executors.file_names import display_name
from cocod.executors.gitignore import GitIgnore, IgnoreChain
from cocod.executors.patterns import PathFilter

log = structlog.get_logger()

Identity = tuple[int, int]
"""(st_dev, st_ino): the same file or folder whatever path reached it."""


@dataclass
class AliasIndex:
    """Which path won for each file and folder identity (follow_symlinks only).

    Filled by full listings; ``read_row`` consults it, so a watcher event for another path
    to an already listed file (``self/a.md`` for ``a.md``) is not indexed twice.
    """

    files: dict[Identity, str] = field(default_factory=dict)
    dirs: dict[Identity, str] = field(default_factory=dict)


@dataclass
class Walk:
    """One listing's inputs; ``on_scandir`` counts folders opened (tests, benchmarks)."""

    root: str
    filter: PathFilter
    on_scandir: Callable[[], None]
    is_root_ok: Callable[[], None]
    """Raises SourceError when the root itself is gone (never "every file was deleted")."""
    ignore: GitIgnore | None = None
    start_chain: IgnoreChain | None = None
    """The ignore chain inside the folder the walk starts in (with ``ignore``)."""
    helper_threads: int | None = None
    """Threads the compiled walk may start beside the caller's: the tokens the caller
    took from its thread limiter, or None (a caller outside any limiter) for as many as
    the walk would use."""

    def enter(
        self, chain: IgnoreChain | None, prefix: str, entries: list[os.DirEntry[str]]
    ) -> IgnoreChain | None:
        """The ignore chain inside a folder just scanned (None when git rules are off)."""
        if self.ignore is None or chain is None:
            return None
        return self.ignore.enter_dir(chain, prefix, (e.name for e in entries))

    def enter_names(
        self, chain: IgnoreChain | None, prefix: str, names: list[str]
    ) -> IgnoreChain | None:
        """:meth:`enter` from the names a folder holds (the compiled walk's listing)."""
        if self.ignore is None or chain is None:
            return None
        return self.ignore.enter_dir(chain, prefix, names)

    def skips_dir(self, rel: str, chain: IgnoreChain | None) -> bool:
        """Is this folder pruned (patterns, or git rules): never opened?"""
        if self.filter.is_excluded(rel):
            return True
        return (
            chain is not None
            and self.ignore is not None
            and self.ignore.is_ignored(chain, rel, is_dir=True)
        )

    def takes_file(self, rel: str, chain: IgnoreChain | None) -> bool:
        if not self.filter.is_included_file(rel):
            return False
        return (
            chain is None
            or self.ignore is None
            or not self.ignore.is_ignored(chain, rel, is_dir=False)
        )

    def scan(self, dir_path: str, prefix: str) -> list[os.DirEntry[str]] | None:
        """The folder's entries, or None when it cannot be read (the root: an error)."""
        self.on_scandir()
        try:
            with os.scandir(dir_path) as it:
                return list(it)
        except (FileNotFoundError, NotADirectoryError):
            if not prefix:
                self.is_root_ok()
            return None
        except OSError as e:
            if not prefix:
                raise SourceError(
                    f"cannot list source root {dir_path!r}: {e.strerror or e}; "
                    "fix its permissions (its indexed rows are kept)"
                ) from e
            log.warning("source.folder_unreadable", folder=display_name(prefix), error=str(e))
            return None


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_SCANDIR_FD = os.scandir in os.supports_fd
"""Scanning an open folder makes each entry's stat an ``fstatat`` on that folder: the
kernel resolves one name, not the whole path again, per file (about a third cheaper)."""


def _open_dir(walk: Walk, dir_path: str, prefix: str) -> tuple[int, list[os.DirEntry[str]]] | None:
    """An open descriptor on the folder and its entries (their stat is relative to it), or
    None when it cannot be read, with :meth:`Walk.scan`'s handling of each failure."""
    if not _SCANDIR_FD:
        entries = walk.scan(dir_path, prefix)
        return None if entries is None else (-1, entries)
    walk.on_scandir()
    try:
        fd = os.open(dir_path, _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        if not prefix:
            walk.is_root_ok()
        return None
    except OSError as e:
        unreadable_folder(dir_path, prefix, e)
        return None
    try:
        with os.scandir(fd) as it:
            return fd, list(it)
    except OSError as e:
        os.close(fd)
        unreadable_folder(dir_path, prefix, e)
        return None


def unreadable_folder(dir_path: str, prefix: str, e: OSError) -> None:
    """An unreadable root is an error (its rows are kept); a subfolder is logged, skipped."""
    if not prefix:
        raise SourceError(
            f"cannot list source root {dir_path!r}: {e.strerror or e}; "
            "fix its permissions (its indexed rows are kept)"
        ) from e
    log.warning("source.folder_unreadable", folder=display_name(prefix), error=str(e))


def list_plain(walk: Walk, start_path: str, start_prefix: str) -> dict[str, Ordinal]:
    """The default walk: symlinks are neither listed nor crossed.

    This loop is the whole cost of a no-op update at 50,000 files, so it is flat: a file's
    name is tested before its relative path is built when the patterns allow
    (:attr:`PathFilter.name_only`), the stat is ``fstatat`` on the open folder, and the
    per-file work is inlined rather than behind :class:`Walk`'s helpers. Where the
    compiled helper was built, :mod:`cocod.executors.native_walk` does the same walk in C.
    """
    if native_walk.available():
        return native_walk.list_native(walk, start_path, start_prefix)
    out: dict[str, Ordinal] = {}
    filt = walk.filter
    suffixes = filt.name_suffixes
    by_name = filt.is_included_name if filt.name_only else None
    by_path = filt.is_included_file
    ignore = walk.ignore
    stack = [(start_path, start_prefix, walk.start_chain)]
    while stack:
        dir_path, prefix, parent_chain = stack.pop()
        scanned = _open_dir(walk, dir_path, prefix)
        if scanned is None:
            continue
        fd, entries = scanned
        try:
            chain = walk.enter(parent_chain, prefix, entries)
            git = chain if ignore is not None else None
            for entry in entries:
                name = entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        rel = prefix + name
                        if not walk.skips_dir(rel, chain):
                            stack.append((os.path.join(dir_path, name), rel + "/", chain))
                        continue
                    if suffixes is not None:
                        if not name.endswith(suffixes):
                            continue
                    elif by_name is not None and not by_name(name):
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        if entry.is_symlink():
                            log.debug("source.symlink_skipped", key=display_name(prefix + name))
                        continue  # a symlink, FIFO, socket or device
                    rel = prefix + name
                    if by_name is None and not by_path(rel):
                        continue
                    if (
                        git is not None
                        and ignore is not None
                        and ignore.is_ignored(git, rel, is_dir=False)
                    ):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # vanished since scandir
                out[rel] = (st.st_mtime_ns, st.st_size)
        finally:
            if fd >= 0:
                os.close(fd)
    return out


def is_inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def list_following(
    walk: Walk, start_path: str, start_prefix: str, aliases: AliasIndex
) -> tuple[dict[str, Ordinal], AliasIndex]:
    """The follow_symlinks walk; returns the rows and the winners it found."""
    real_root = os.path.realpath(walk.root)
    found = AliasIndex(dirs=dict(aliases.dirs) if start_prefix else {})
    files: dict[Identity, tuple[str, Ordinal]] = {}
    heap = [(start_prefix, start_path)]
    chains = {start_prefix: walk.start_chain}  # each queued folder's parent chain
    while heap:
        prefix, dir_path = heapq.heappop(heap)
        parent_chain = chains.pop(prefix, None)
        try:
            dst = os.stat(dir_path)
        except OSError:
            if not prefix:
                walk.is_root_ok()
            continue
        ident = (dst.st_dev, dst.st_ino)
        winner = found.dirs.get(ident)
        if winner is not None and winner != prefix.rstrip("/"):
            log.debug("source.folder_alias_skipped", key=display_name(prefix), kept=winner)
            continue  # an alias of a folder already walked, or a loop back to an ancestor
        found.dirs[ident] = prefix.rstrip("/")
        entries = walk.scan(dir_path, prefix)
        if entries is None:
            continue
        chain = walk.enter(parent_chain, prefix, entries)
        for entry in entries:
            rel = prefix + entry.name
            try:
                st: os.stat_result | None = None
                if entry.is_symlink():
                    st = _resolve_link(entry, rel, real_root)
                    if st is None:
                        continue
                    is_dir, is_file = stat.S_ISDIR(st.st_mode), stat.S_ISREG(st.st_mode)
                else:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    is_file = not is_dir and entry.is_file(follow_symlinks=False)
                if is_dir:
                    if not walk.skips_dir(rel, chain):
                        heapq.heappush(heap, (rel + "/", entry.path))
                        chains[rel + "/"] = chain
                    continue
                if not is_file or not walk.takes_file(rel, chain):
                    continue
                if st is None:
                    st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            fid = (st.st_dev, st.st_ino)
            best = files.get(fid)
            if best is None or rel < best[0]:
                files[fid] = (rel, (st.st_mtime_ns, st.st_size))
    found.files = {fid: key for fid, (key, _) in files.items()}
    return {key: ordinal for key, ordinal in files.values()}, found


def _resolve_link(entry: os.DirEntry[str], rel: str, real_root: str) -> os.stat_result | None:
    """The target's stat when the link may be followed; None (logged) when it may not."""
    try:
        st = os.stat(entry.path)
    except OSError as e:
        log.debug("source.symlink_dangling", key=display_name(rel), error=str(e))
        return None
    if not is_inside(os.path.realpath(entry.path), real_root):
        log.debug("source.symlink_leaves_root", key=display_name(rel))
        return None
    return st
