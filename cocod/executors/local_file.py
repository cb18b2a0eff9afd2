"""LocalFile: list, stat and read files under a folder.

Keys are paths relative to the root, '/'-separated, decoded with ``surrogateescape``
(:mod:`cocod.executors.file_names`), exactly the same whether a file was found by a scan
or reported by a watcher. Listing only stats (:mod:`cocod.executors.file_listing`);
contents are read and hashed only for rows whose ordinal (mtime_ns, size) or logic
changed. Patterns follow v0's globset rules (:mod:`cocod.executors.patterns`); with
``respect_gitignore``, git's ignore rules apply on top (:mod:`cocod.executors.gitignore`),
re-read on every full listing, so an edited ``.gitignore`` re-evaluates the source on the
next pass (its newly ignored rows are no longer listed, so they are deleted).

Untrusted input has bounded cost: a file larger than ``max_file_size`` is listed (the
engine knows it exists and keeps its old rows) but reading it is a row error that names
the size and the knob, and no read ever takes more than ``max_file_size + 1`` bytes (a file
that grows, or whose size lies, cannot make us read gigabytes). Symlinks are not followed
unless ``follow_symlinks=True``; even then no path may leave the root.
"""

from __future__ import annotations

import codecs
import errno
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import anyio
import structlog

from cocod.engine.fingerprint import fingerprint_bytes
from cocod.engine.interfaces import Ordinal, SourceRow
from cocod.errors import RowError, SourceError
from cocod.executors.file_listing import (
    AliasIndex,
    Walk,
    is_inside,
    list_following,
    list_plain,
)
from cocod.executors.file_names import display_name, key_parts
from cocod.executors.gitignore import GitIgnore, IgnoreChain
from cocod.executors.native_walk import borrowed_walker_threads
from cocod.executors.patterns import PathFilter
from cocod.ops.sources import LocalFile

log = structlog.get_logger()

RACY_WINDOW_NS = 2_000_000_000
"""A file modified this recently may change again within the same timestamp tick with the
same size, so its (mtime, size) cannot prove it unchanged later. Such rows are stored
without an ordinal and re-hashed on the next pass (git's "racily clean" rule). This is
the window for mtimes in whole seconds: file systems that keep 1 s or 2 s (FAT)."""
FINE_RACY_WINDOW_NS = 50_000_000
"""The window for an mtime with a sub-second part: the file system keeps fine timestamps,
stamped from the kernel's coarse clock (one tick, 1-10 ms, behind). A write after 50 ms
always gets another mtime. With the 2 s window every file saved just before a one-shot
update (an editor, then cron or a hook) was recorded racy, so the next pass read, hashed
and committed it again."""


def is_racy(mtime_ns: int, now_ns: int) -> bool:
    """Whether a file with this mtime, read now, must be re-checked on the next pass."""
    window = RACY_WINDOW_NS if mtime_ns % 1_000_000_000 == 0 else FINE_RACY_WINDOW_NS
    return now_ns - mtime_ns < window


_READ_CHUNK = 1 << 20
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR)
_LINK = (errno.ELOOP, errno.EMLINK)  # O_NOFOLLOW met a symlink (EMLINK on some BSDs)


def decode_text(data: bytes, key: str) -> str:
    """Decode text by BOM (UTF-8/UTF-16), else strict UTF-8.

    v0 replaced undecodable bytes silently; cocod refuses the row with an error that says
    what to do, so an index never fills with U+FFFD garbage from a binary file.
    """
    if data.startswith(codecs.BOM_UTF8):
        data, encoding = data[len(codecs.BOM_UTF8) :], "utf-8"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise RowError(
            f"file {display_name(key)!r} is not valid {encoding.upper()} (byte {e.start}: "
            f"{e.reason}); use LocalFile(binary=True) or add it to excluded_patterns"
        ) from None


def human_size(n: int) -> str:
    """Decimal units, as `ls -h --si` and most people read sizes: 209715200 → '210 MB'."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 10 * scale else f"{n / scale:.0f} {unit}"
    return f"{n} bytes"


def too_big_error(key: str, size: int | None, limit: int) -> RowError:
    what = f"is {human_size(size)} ({size} bytes)" if size is not None else "grew while read"
    return RowError(
        f"file {display_name(key)!r} {what}, over LocalFile(max_file_size={limit}); "
        "raise max_file_size or exclude it"
    )


class ReadLimitExceeded(Exception):
    """More bytes than the limit came back (the file grew, or its size lied); internal."""


def read_bounded(f: BinaryIO, size_hint: int, limit: int | None) -> bytes:
    """The whole file, but never more than ``limit + 1`` bytes (then ReadLimitExceeded)."""
    if limit is None:
        return f.read()
    chunks: list[bytes] = []
    total = 0
    want = min(size_hint, limit) + 1  # one read for a file whose size did not change
    while True:
        chunk = f.read(want)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise ReadLimitExceeded
        want = min(_READ_CHUNK, limit + 1 - total)


class LocalFileReader:
    """The engine's SourceReader for a LocalFile spec."""

    def __init__(self, spec: LocalFile, limiter: anyio.CapacityLimiter | None = None) -> None:
        self.spec = spec
        self.root = Path(spec.path).expanduser()
        self._filter = PathFilter(spec.included_patterns, spec.excluded_patterns)
        self._limiter = limiter
        self._aliases = AliasIndex()
        self._ignore = GitIgnore(self.root) if spec.respect_gitignore else None
        self.folders_scanned = 0
        """How many folders listings opened (os.scandir calls): proves pruning in tests."""

    # -- keys and patterns ------------------------------------------------------------

    def key_of(self, path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str | None:
        """The key of an absolute or root-relative path, or None if it is outside the root.

        ``bytes`` paths are decoded like every scanned name (``os.fsdecode``).
        """
        text = os.fsdecode(path)
        try:
            rel = Path(os.path.abspath(text)).relative_to(os.path.abspath(self.root))
        except ValueError:
            return None
        key = rel.as_posix()
        return None if key in ("", ".") else key

    def is_excluded_dir(self, key: str) -> bool:
        """Is this folder (or one above it) pruned by the exclude patterns or git's rules?"""
        parts = key.split("/")
        if any(self._filter.is_excluded("/".join(parts[: i + 1])) for i in range(len(parts))):
            return True
        if self._ignore is None or not self._ignore.is_dir_ignored(key):
            return False
        # The watcher asks this of deleted paths too, whose kind is unknown: a file the
        # folder-only rule (``foo/``) does not cover must still reach the engine.
        return self._is_dir_now(key) or self._ignore.is_file_ignored(key)

    def _is_dir_now(self, key: str) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(os.path.join(self.root, key)).st_mode)
        except OSError:
            return False

    def is_candidate(self, key: str) -> bool:
        """Would a file with this key be listed (patterns and git's rules; the rest is
        checked on read)?"""
        parts = key.split("/")
        for i in range(1, len(parts)):
            if self._filter.is_excluded("/".join(parts[:i])):
                return False
        if not self._filter.is_included_file(key):
            return False
        return self._ignore is None or not self._ignore.is_file_ignored(key)

    def ignore_scope_of(self, key: str) -> str | None:
        """The folder key ("" for the whole source) to list again because ``key`` is a git
        rules file whose change may alter what the source holds, else None.

        The watcher asks this for every changed path: a hint for the folder (or a full
        pass for "") re-evaluates it, deleting rows of files the new rules ignore and
        indexing those they no longer ignore. None whenever git rules are off.
        """
        if self._ignore is None or key_parts(key) is None:
            return None
        return self._ignore.scope_of_change(key)

    # -- listing ----------------------------------------------------------------------

    def check_root(self) -> None:
        if not self.root.is_dir():
            raise SourceError(
                f"source root {str(self.root)!r} does not exist or is not a directory "
                f"(resolved to {os.path.abspath(self.root)}); its indexed rows are kept"
            )

    async def list_rows(self) -> dict[str, Ordinal]:
        with borrowed_walker_threads(self._limiter) as helpers:
            return await anyio.to_thread.run_sync(
                self.list_rows_sync, "", helpers, limiter=self._limiter
            )

    async def list_rows_under(self, folder_keys: Sequence[str]) -> dict[str, Ordinal]:
        """Files under some folders only: a folder created or moved in, found by an event."""
        with borrowed_walker_threads(self._limiter) as helpers:
            return await anyio.to_thread.run_sync(
                self._list_under_sync, list(folder_keys), helpers, limiter=self._limiter
            )

    def _list_under_sync(self, folder_keys: list[str], helper_threads: int) -> dict[str, Ordinal]:
        out: dict[str, Ordinal] = {}
        for key in folder_keys:
            if not self.is_excluded_dir(key) and self._is_listable_dir(key):
                out.update(self.list_rows_sync(key, helper_threads))
        return out

    def _is_listable_dir(self, key: str) -> bool:
        """A folder inside the root reached without crossing a symlink we may not follow."""
        parts = key_parts(key)
        if parts is None:
            return False
        path = os.path.join(self.root, key)
        try:
            if self.spec.follow_symlinks:
                real = os.path.realpath(path)
                return is_inside(real, os.path.realpath(self.root)) and os.path.isdir(real)
            current = str(self.root)
            for part in parts:
                current = os.path.join(current, part)
                if not stat.S_ISDIR(os.lstat(current).st_mode):
                    return False
        except OSError:
            return False
        return True

    def _count_scandir(self) -> None:
        self.folders_scanned += 1

    def _start_chain(self, start: str) -> IgnoreChain | None:
        """The git rules a listing starts with (those of ``start``'s parent), or None."""
        if self._ignore is None:
            return None
        if not start:
            self._ignore.refresh()  # a full listing re-reads the rules from outside the root
            return self._ignore.root_chain()
        return self._ignore.chain_for(start.rpartition("/")[0])

    def list_rows_sync(
        self, start: str = "", helper_threads: int | None = None
    ) -> dict[str, Ordinal]:
        """The listing (of the folder ``start``, or the whole root); ``helper_threads``:
        see :attr:`~cocod.executors.file_listing.Walk.helper_threads`."""
        self.check_root()
        if start and not self._is_listable_dir(start):
            return {}
        chain = self._start_chain(start)
        if self._ignore is not None and (
            chain is None or (start and self._ignore.is_ignored(chain, start, is_dir=True))
        ):
            return {}
        walk = Walk(
            str(self.root),
            self._filter,
            self._count_scandir,
            self.check_root,
            ignore=self._ignore,
            start_chain=chain,
            helper_threads=helper_threads,
        )
        path = os.path.join(self.root, start) if start else str(self.root)
        prefix = f"{start}/" if start else ""
        if not self.spec.follow_symlinks:
            return list_plain(walk, path, prefix)
        rows, found = list_following(walk, path, prefix, self._aliases)
        if start:  # a partial listing only adds what no earlier listing decided
            merged = AliasIndex(dict(self._aliases.files), found.dirs)
            for fid, key in found.files.items():
                merged.files.setdefault(fid, key)
            self._aliases = merged
        else:
            self._aliases = found
        return rows

    # -- reading ----------------------------------------------------------------------

    async def read_row(self, key: str) -> SourceRow | None:
        return await anyio.to_thread.run_sync(self.read_row_sync, key, limiter=self._limiter)

    def read_row_sync(self, key: str) -> SourceRow | None:
        """The row, or None when no listing would show this key (gone, excluded, a
        symlink not followed, a path out of the root, another path to a listed file)."""
        if not self.is_candidate(key):
            return None
        parts = key_parts(key)
        if parts is None:
            return None
        try:
            fd = self._open_following(key) if self.spec.follow_symlinks else self._open(parts)
            if fd is None:
                return None
            with open(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    return None  # replaced by a FIFO or device between stat and open
                if self.spec.follow_symlinks and not self._is_winner(key, st):
                    return None
                limit = self.spec.max_file_size
                if limit is not None and st.st_size > limit:
                    raise too_big_error(key, st.st_size, limit)  # nothing read
                try:
                    data = read_bounded(f, st.st_size, limit)
                except ReadLimitExceeded:
                    assert limit is not None
                    raise too_big_error(key, None, limit) from None
        except OSError as e:
            if e.errno in _GONE:
                # A vanished root is an error of the source, never "every file was deleted".
                self.check_root()
                return None
            raise RowError(
                f"cannot read file {display_name(key)!r}: {e.strerror or e}; "
                "fix its permissions or add it to excluded_patterns"
            ) from e
        content: str | bytes = data if self.spec.binary else decode_text(data, key)
        return SourceRow(
            value={"filename": display_name(key), "content": content},
            ordinal=None
            if is_racy(st.st_mtime_ns, time.time_ns())
            else (st.st_mtime_ns, st.st_size),
            content_fp=fingerprint_bytes(data),
        )

    def _open(self, parts: list[str]) -> int | None:
        """Open a regular file by walking from the root with O_NOFOLLOW at every step, so
        no symlink (the file or a folder above it) is crossed even if one appears now."""
        dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC)
        try:
            for part in parts[:-1]:
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC
                try:
                    next_fd = os.open(os.fsencode(part), flags, dir_fd=dir_fd)
                except OSError as e:
                    if e.errno in _LINK:
                        return None  # a folder symlink: not part of the source
                    raise
                os.close(dir_fd)
                dir_fd = next_fd
            name = os.fsencode(parts[-1])
            if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                return None  # a symlink, FIFO, socket or device: never opened
            try:
                flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | _O_CLOEXEC
                return os.open(name, flags, dir_fd=dir_fd)
            except OSError as e:
                if e.errno in _LINK:
                    return None
                raise
        finally:
            os.close(dir_fd)

    def _open_following(self, key: str) -> int | None:
        """follow_symlinks: open the file only if its real path is inside the root."""
        path = os.fsencode(os.path.join(self.root, key))
        real = os.path.realpath(path)
        if not is_inside(os.fsdecode(real), os.path.realpath(self.root)):
            log.debug("source.symlink_leaves_root", key=display_name(key))
            return None
        st = os.stat(real)
        if not stat.S_ISREG(st.st_mode):
            return None
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | _O_CLOEXEC)
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):  # swapped since realpath
            os.close(fd)
            return None
        return fd

    def _is_winner(self, key: str, st: os.stat_result) -> bool:
        """Is ``key`` the path the last listing kept for this file (and its folder)?"""
        winner = self._aliases.files.get((st.st_dev, st.st_ino))
        if winner is not None:
            return winner == key
        parent = key.rpartition("/")[0]
        try:
            pst = os.stat(os.path.join(self.root, parent))
        except OSError:
            return True
        folder = self._aliases.dirs.get((pst.st_dev, pst.st_ino))
        return folder is None or folder == parent
