"""max_file_size: an oversized file is a row error naming the size and the knob; reads are
bounded whatever the file claims."""

from __future__ import annotations

import io
import os
import resource
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog.testing

import cocod as cocoindex
from cocod.errors import RowError
from cocod.executors.local_file import LocalFileReader, ReadLimitExceeded, read_bounded
from cocod.ops.sources import DEFAULT_MAX_FILE_SIZE, LocalFile
from tests.conftest import SqlHelper, write

BIG = 200 * 1024 * 1024


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)  # no data blocks: creating it costs nothing


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def test_default_limit_is_10_mib() -> None:
    assert DEFAULT_MAX_FILE_SIZE == 10 * 1024 * 1024
    assert LocalFile(path=".").max_file_size == DEFAULT_MAX_FILE_SIZE


def test_oversized_file_is_listed_and_a_row_error_without_reading(tmp_path: Path) -> None:
    write(tmp_path / "ok.md", "small")
    _sparse(tmp_path / "big.txt", BIG)
    reader = LocalFileReader(LocalFile(path=str(tmp_path)))
    listed = reader.list_rows_sync()
    assert sorted(listed) == ["big.txt", "ok.md"]  # the engine knows the row exists
    assert listed["big.txt"][1] == BIG
    before = _rss_bytes()
    with pytest.raises(RowError) as e:
        reader.read_row_sync("big.txt")
    assert str(e.value) == (
        "file 'big.txt' is 210 MB (209715200 bytes), over LocalFile(max_file_size=10485760); "
        "raise max_file_size or exclude it"
    )
    assert _rss_bytes() - before < 100 * 1024 * 1024
    row = reader.read_row_sync("ok.md")
    assert row is not None and row.value["content"] == "small"


def test_no_limit_when_none(tmp_path: Path) -> None:
    _sparse(tmp_path / "eleven.bin", 11 * 1024 * 1024)
    reader = LocalFileReader(LocalFile(path=str(tmp_path), binary=True, max_file_size=None))
    row = reader.read_row_sync("eleven.bin")
    assert row is not None and len(row.value["content"]) == 11 * 1024 * 1024
    limited = LocalFileReader(LocalFile(path=str(tmp_path), binary=True, max_file_size=100))
    with pytest.raises(RowError, match="max_file_size=100"):
        limited.read_row_sync("eleven.bin")


def test_reads_stop_past_the_limit_whatever_the_size_claimed() -> None:
    """A file that grows after fstat, or whose st_size lies (procfs says 0)."""
    data = b"x" * 5000
    assert read_bounded(io.BytesIO(data), 0, 5000) == data
    assert read_bounded(io.BytesIO(data), 10**9, 5000) == data
    f = io.BytesIO(data)
    with pytest.raises(ReadLimitExceeded):
        read_bounded(f, 0, 1000)
    assert f.tell() <= 1001 + 1024 * 1024  # one bounded chunk, never the whole
    with open("/proc/self/status", "rb") as proc:  # st_size 0, content not
        assert os.fstat(proc.fileno()).st_size == 0
        with pytest.raises(ReadLimitExceeded):
            read_bounded(proc, 0, 10)


def _flow(spec: LocalFile) -> Callable[[cocoindex.FlowBuilder, cocoindex.DataScope], None]:
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["files"] = fb.add_source(spec)
        out = scope.add_collector()
        with scope["files"].row() as f:
            out.collect(filename=f["filename"], content=f["content"])
        out.export("files", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

    return define


def test_update_reports_the_big_file_and_indexes_the_others(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "a.md", "alpha")
    write(tmp_path / "b.md", "beta")
    flow = cocoindex.open_flow("Sizes", _flow(LocalFile(path=str(tmp_path))))
    flow.setup()
    flow.update()
    _sparse(tmp_path / "b.md", BIG)  # an indexed file grows past the limit
    _sparse(tmp_path / "huge.log", BIG)
    before = _rss_bytes()
    with structlog.testing.capture_logs() as logs:
        info = flow.update()
    assert _rss_bytes() - before < 100 * 1024 * 1024
    assert info.stats["files"]["num_errors"] == 2
    errors = sorted(str(e["error"]) for e in logs if e.get("log_level") == "error")
    assert errors[0].startswith("file 'b.md' is 210 MB") and "max_file_size" in errors[0]
    assert errors[1].startswith("file 'huge.log' is 210 MB")
    # b.md keeps its last good row (not deleted as v0's "treated as missing" would).
    rows = sql.fetch("SELECT filename, content FROM sizes__files ORDER BY 1")
    assert [tuple(r) for r in rows] == [("a.md", "alpha"), ("b.md", "beta")]
    flow.close()
