"""Source specs (``cocod.sources``)."""

from __future__ import annotations

from cocod.flow.specs import SourceSpec
from cocod.flow.types import ValueType, basic, struct


class LocalFile(SourceSpec):
    """Files under a local folder, one row per file keyed by its relative path.

    ``watch_changes`` (not accepted by v0's Python class) turns on file-system events in
    live mode; ``None`` means "on when live-updating".
    """

    path: str
    binary: bool = False
    included_patterns: list[str] | None = None
    excluded_patterns: list[str] | None = None
    max_file_size: int | None = None
    watch_changes: bool | None = None

    def row_schema(self) -> tuple[ValueType, int]:
        content = basic("Bytes") if self.binary else basic("Str")
        return struct([("filename", basic("Str")), ("content", content)]), 1
