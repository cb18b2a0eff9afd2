"""Source specs (``cocod.sources``)."""

from __future__ import annotations

from cocod.flow.specs import SourceSpec
from cocod.flow.types import ValueType, basic, struct

DEFAULT_MAX_FILE_SIZE = 10 * 1024 * 1024
"""10 MiB: far above any text or code file people index, far below what hurts memory."""


class LocalFile(SourceSpec):
    """Files under a local folder, one row per file keyed by its relative path.

    ``max_file_size`` (bytes) defaults to :data:`DEFAULT_MAX_FILE_SIZE` (v0: no limit); a
    larger file is still listed, and is a row error naming its size and this knob (v0
    skipped it silently). ``None`` means no limit.

    ``follow_symlinks`` (not in v0, which always follows them) is off by default: symlinks
    to files or folders are neither listed nor read. When on, a link whose target leaves
    the root is skipped, loops are skipped, and a file reachable by several paths is
    indexed once, under the path that sorts first.

    ``respect_gitignore`` (not in v0) skips what git would ignore: ``.gitignore`` files in
    every folder, ``.git/info/exclude`` and the global excludes (``core.excludesFile``),
    and ``.git`` itself; ignored folders are never opened (``cocod.executors.gitignore``).
    The built-in flows (``cocod.flows``) turn it on.

    ``watch_changes`` (not accepted by v0's Python class) turns on file-system events in
    live mode; ``None`` means "on when live-updating".
    """

    path: str
    binary: bool = False
    included_patterns: list[str] | None = None
    excluded_patterns: list[str] | None = None
    max_file_size: int | None = DEFAULT_MAX_FILE_SIZE
    follow_symlinks: bool = False
    respect_gitignore: bool = False
    watch_changes: bool | None = None

    def row_schema(self) -> tuple[ValueType, int]:
        content = basic("Bytes") if self.binary else basic("Str")
        return struct([("filename", basic("Str")), ("content", content)]), 1
