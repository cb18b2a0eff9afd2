"""A file saved just before a pass is trusted by its ordinal once the file system's clock
has moved on: 50 ms for sub-second mtimes, the whole 2 s for mtimes in whole seconds."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cocod.executors.local_file import LocalFileReader, is_racy
from cocod.ops.sources import LocalFile
from tests.conftest import write


def _read_ordinal(root: Path, name: str, age_ns: int, *, whole_second: bool) -> object:
    path = write(root / name, "text")
    mtime = time.time_ns() - age_ns
    if whole_second:  # as FAT or a 1 s file system stores it: 0.3 to 1.3 s ago
        mtime -= mtime % 1_000_000_000
    os.utime(path, ns=(mtime, mtime))
    reader = LocalFileReader(LocalFile(path=str(root), included_patterns=["*.md"]))
    row = reader.read_row_sync(name)
    assert row is not None
    return row.ordinal


def test_a_file_saved_a_moment_ago_is_trusted_on_a_fine_grained_file_system(
    tmp_path: Path,
) -> None:
    ordinal = _read_ordinal(tmp_path, "a.md", 300_000_000, whole_second=False)
    assert ordinal is not None  # 0.3 s ago: the next pass need not re-read it
    assert _read_ordinal(tmp_path, "b.md", 5_000_000, whole_second=False) is None


def test_whole_second_mtimes_keep_the_two_second_window(tmp_path: Path) -> None:
    assert _read_ordinal(tmp_path, "c.md", 300_000_000, whole_second=True) is None


def test_the_rule() -> None:
    now = 1_700_000_000_123_456_789
    assert is_racy(now - 10_000_000, now)
    assert not is_racy(now - 60_000_000, now)
    whole = now - now % 1_000_000_000
    assert is_racy(whole, whole + 1_500_000_000)
    assert not is_racy(whole - 1_000_000_000, whole + 1_500_000_000)
    assert is_racy(now + 5_000_000_000, now)  # from the future (clock skew): re-check
