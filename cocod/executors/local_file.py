"""LocalFile: list, stat and read files under a folder.

Keys are paths relative to the root, '/'-separated, exactly the same whether a file was
found by a scan or (later) reported by a watcher. Listing only stats; contents are read and
hashed only for rows whose ordinal (mtime_ns, size) or logic changed.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import anyio

from cocod.engine.fingerprint import fingerprint_bytes
from cocod.engine.interfaces import Ordinal, SourceRow
from cocod.errors import RowError, SourceError
from cocod.ops.sources import LocalFile

RACY_WINDOW_NS = 2_000_000_000
"""A file modified this recently may change again within the same timestamp tick with the
same size, so its (mtime, size) cannot prove it unchanged later. Such rows are stored
without an ordinal and re-hashed on the next pass (git's "racily clean" rule)."""


@lru_cache(maxsize=256)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """globset-style matching, as v0: ``*`` also crosses '/', so ``*.md`` matches ``a/b.md``."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            while i + 1 < n and pattern[i + 1] == "*":
                i += 1
            if i + 1 < n and pattern[i + 1] == "/" and out and out[-1] == "/":
                # "a/**/b" also matches "a/b"
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        elif c == "{":
            j = pattern.find("}", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                alternatives = pattern[i + 1 : j].split(",")
                out.append(
                    "(?:" + "|".join(glob_to_regex(a).pattern[:-2] for a in alternatives) + ")"
                )
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


class PathFilter:
    def __init__(self, included: Sequence[str] | None, excluded: Sequence[str] | None) -> None:
        self._included = [glob_to_regex(p) for p in included or ()]
        self._excluded = [glob_to_regex(p) for p in excluded or ()]

    def is_excluded(self, rel: str) -> bool:
        return any(p.match(rel) for p in self._excluded)

    def is_included_file(self, rel: str) -> bool:
        if self.is_excluded(rel):
            return False
        return not self._included or any(p.match(rel) for p in self._included)


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
            f"file {key!r} is not valid {encoding.upper()} (byte {e.start}: {e.reason}); "
            "use LocalFile(binary=True) or add it to excluded_patterns"
        ) from None


class LocalFileReader:
    """The engine's SourceReader for a LocalFile spec."""

    def __init__(self, spec: LocalFile, limiter: anyio.CapacityLimiter | None = None) -> None:
        self.spec = spec
        self.root = Path(spec.path).expanduser()
        self._filter = PathFilter(spec.included_patterns, spec.excluded_patterns)
        self._limiter = limiter

    def key_of(self, path: str | os.PathLike[str]) -> str | None:
        """The key of an absolute or root-relative path, or None if it is outside the root."""
        try:
            rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(self.root))
        except ValueError:
            return None
        text = rel.as_posix()
        return None if text in ("", ".") else text

    def check_root(self) -> None:
        if not self.root.is_dir():
            raise SourceError(
                f"source root {str(self.root)!r} does not exist or is not a directory "
                f"(resolved to {os.path.abspath(self.root)}); its indexed rows are kept"
            )

    async def list_rows(self) -> dict[str, Ordinal]:
        return await anyio.to_thread.run_sync(self.list_rows_sync, limiter=self._limiter)

    def is_excluded_dir(self, key: str) -> bool:
        """Is this folder (or one above it) pruned by the exclude patterns?"""
        parts = key.split("/")
        return any(self._filter.is_excluded("/".join(parts[: i + 1])) for i in range(len(parts)))

    async def list_rows_under(self, folder_keys: Sequence[str]) -> dict[str, Ordinal]:
        """Files under some folders only: a folder created or moved in, found by an event."""
        return await anyio.to_thread.run_sync(
            self._list_under_sync, list(folder_keys), limiter=self._limiter
        )

    def _list_under_sync(self, folder_keys: list[str]) -> dict[str, Ordinal]:
        out: dict[str, Ordinal] = {}
        for key in folder_keys:
            if not self.is_excluded_dir(key) and (self.root / key).is_dir():
                out.update(self.list_rows_sync(start=key))
        return out

    def list_rows_sync(self, start: str = "") -> dict[str, Ordinal]:
        self.check_root()
        out: dict[str, Ordinal] = {}
        max_size = self.spec.max_file_size
        seen_dirs: set[tuple[int, int]] = set()
        stack: list[tuple[str, str]] = [
            (str(self.root / start) if start else str(self.root), f"{start}/" if start else "")
        ]
        while stack:
            dir_path, prefix = stack.pop()
            try:
                st = os.stat(dir_path)
                ident = (st.st_dev, st.st_ino)
                if ident in seen_dirs:  # symlink loop
                    continue
                seen_dirs.add(ident)
                entries = list(os.scandir(dir_path))
            except FileNotFoundError:
                if not prefix:
                    self.check_root()
                continue
            except PermissionError as e:
                if not prefix:
                    raise SourceError(f"cannot list source root {dir_path!r}: {e}") from e
                continue
            for entry in entries:
                rel = prefix + entry.name
                try:
                    st = entry.stat()  # follows symlinks
                except OSError:
                    continue  # dangling symlink or vanished
                if stat.S_ISDIR(st.st_mode):
                    if not self._filter.is_excluded(rel):
                        stack.append((entry.path, rel + "/"))
                elif stat.S_ISREG(st.st_mode):
                    if max_size is not None and st.st_size > max_size:
                        continue
                    if self._filter.is_included_file(rel):
                        out[rel] = (st.st_mtime_ns, st.st_size)
        return out

    def is_candidate(self, key: str) -> bool:
        """Would a file with this key be listed (patterns only; size is checked on read)?"""
        parts = key.split("/")
        for i in range(1, len(parts)):
            if self._filter.is_excluded("/".join(parts[:i])):
                return False
        return self._filter.is_included_file(key)

    async def read_row(self, key: str) -> SourceRow | None:
        return await anyio.to_thread.run_sync(self.read_row_sync, key, limiter=self._limiter)

    def read_row_sync(self, key: str) -> SourceRow | None:
        if not self.is_candidate(key):
            return None
        path = self.root / key
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                return None  # a FIFO, socket or device: opening it could block forever
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            with open(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    return None
                max_size = self.spec.max_file_size
                if max_size is not None and st.st_size > max_size:
                    return None
                data = f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            # A vanished root is an error of the source, never "every file was deleted".
            self.check_root()
            return None
        except OSError as e:
            raise RowError(f"cannot read file {key!r}: {e.strerror or e}") from e
        content: str | bytes = data if self.spec.binary else decode_text(data, key)
        is_racy = time.time_ns() - st.st_mtime_ns < RACY_WINDOW_NS
        return SourceRow(
            value={"filename": key, "content": content},
            ordinal=None if is_racy else (st.st_mtime_ns, st.st_size),
            content_fp=fingerprint_bytes(data),
        )
