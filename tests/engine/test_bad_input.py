"""Bad input: a clear error naming flow, source and key (or the name); nothing else lost."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import structlog.testing

import cocod as cocoindex
from cocod.engine.interfaces import Ordinal
from cocod.errors import NamingError, SourceError
from cocod.executors.local_file import LocalFileReader
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow, split_paragraphs


def _rows(sql: SqlHelper, table: str) -> list[tuple[str, int, str]]:
    return [tuple(r) for r in sql.fetch(f"SELECT filename, index, text FROM {table} ORDER BY 1, 2")]


def _failures(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if e.get("log_level") == "error"]


def test_non_utf8_file_is_an_error_of_that_row_only(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    write(docs / "good.md", "fine text")
    write(docs / "bad.md", "was valid once")
    flow = cocoindex.open_flow("Bytes", paragraph_flow(str(docs)))
    flow.setup()
    flow.update()
    (docs / "bad.md").write_bytes(b"caf\xe9 \xff\xfe broken")
    write(docs / "good.md", "fine text\n\nmore")
    with structlog.testing.capture_logs() as logs:
        info = flow.update()
    assert info.stats["documents"]["num_errors"] == 1
    assert info.stats["documents"]["num_updates"] == 1
    (failure,) = _failures(logs)
    assert failure["flow"] == "Bytes" and failure["source"] == "documents"
    assert failure["key"] == "bad.md"
    assert "not valid UTF-8" in str(failure["error"]) and "binary=True" in str(failure["error"])
    # The row keeps its last good target rows, and is retried (not forgotten) next pass.
    assert _rows(sql, "bytes__paragraphs") == [
        ("bad.md", 0, "was valid once"),
        ("good.md", 0, "fine text"),
        ("good.md", 1, "more"),
    ]
    write(docs / "bad.md", "repaired")
    info = flow.update()
    assert info.stats["documents"]["num_updates"] == 1
    assert ("bad.md", 0, "repaired") in _rows(sql, "bytes__paragraphs")


class _VanishingReader(LocalFileReader):
    """Deletes one file right after listing: the race between listing and reading."""

    victim = "gone.md"

    async def list_rows(self) -> dict[str, Ordinal]:
        listed = await super().list_rows()
        (self.root / self.victim).unlink(missing_ok=True)
        return listed


def test_file_deleted_between_listing_and_reading(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    write(docs / "keep.md", "kept")
    write(docs / "gone.md", "transient")
    flow = cocoindex.open_flow("Vanish", paragraph_flow(str(docs)))
    flow.setup()
    runtime = flow.execution().sources["documents"]
    runtime.reader = _VanishingReader(runtime.reader.spec)
    info = flow.update()
    assert info.stats["documents"]["num_errors"] == 0
    assert _rows(sql, "vanish__paragraphs") == [("keep.md", 0, "kept")]


class _UnreadableReader(LocalFileReader):
    def read_row_sync(self, key: str):  # type: ignore[no-untyped-def]
        if key == "locked.md":
            raise PermissionError(13, "Permission denied", str(self.root / key))
        return super().read_row_sync(key)


def test_unreadable_file_is_an_error_of_that_row_only(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    write(docs / "ok.md", "readable")
    write(docs / "locked.md", "secret")
    flow = cocoindex.open_flow("Locked", paragraph_flow(str(docs)))
    flow.setup()
    if os.geteuid() == 0:  # root reads anything: inject the OS error at our reader seam
        runtime = flow.execution().sources["documents"]
        runtime.reader = _UnreadableReader(runtime.reader.spec)
    else:
        (docs / "locked.md").chmod(0)
    with structlog.testing.capture_logs() as logs:
        info = flow.update()
    assert info.stats["documents"]["num_errors"] == 1
    assert info.stats["documents"]["num_insertions"] == 1
    (failure,) = _failures(logs)
    assert failure["key"] == "locked.md" and failure["flow"] == "Locked"
    assert "Permission denied" in str(failure["error"])
    assert _rows(sql, "locked__paragraphs") == [("ok.md", 0, "readable")]


def test_missing_source_root_keeps_target_rows(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "one\n\ntwo")
    flow = cocoindex.open_flow("Rootless", paragraph_flow(str(docs)))
    flow.setup()
    flow.update()
    shutil.rmtree(docs)
    with pytest.raises(SourceError) as raised:
        flow.update()
    message = str(raised.value)
    assert "Rootless" in message and "documents" in message and str(docs) in message
    assert len(_rows(sql, "rootless__paragraphs")) == 2
    write(docs / "a.md", "one")
    info = flow.update()
    assert info.stats["documents"]["num_updates"] == 1
    assert _rows(sql, "rootless__paragraphs") == [("a.md", 0, "one")]


def _constant_key_flow(source: str):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["documents"] = fb.add_source(cocoindex.sources.LocalFile(path=source))
        out = scope.add_collector()
        with scope["documents"].row() as doc:
            doc["paragraphs"] = doc["content"].transform(split_paragraphs)
            with doc["paragraphs"].row() as para:
                # Bug in the flow: the key ignores the paragraph, so files with two
                # paragraphs collect the same key twice.
                out.collect(filename=doc["filename"], text=para["text"])
        out.export("dup", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

    return define


def test_duplicate_primary_key_in_one_file(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    write(docs / "single.md", "just one")
    write(docs / "double.md", "first\n\nsecond")
    flow = cocoindex.open_flow("Dups", _constant_key_flow(str(docs)))
    flow.setup()
    with structlog.testing.capture_logs() as logs:
        info = flow.update()
    assert info.stats["documents"]["num_errors"] == 1
    (failure,) = _failures(logs)
    error = str(failure["error"])
    assert "'Dups'" in error and "'documents'" in error and "'double.md'" in error
    assert '["double.md"]' in error and "primary key" in error
    assert [tuple(r) for r in sql.fetch("SELECT filename, text FROM dups__dup")] == [
        ("single.md", "just one")
    ]


def test_invalid_names_are_rejected_with_the_name(tmp_path: Path, sql: SqlHelper) -> None:
    with pytest.raises(NamingError, match="'bad-name'"):
        cocoindex.open_flow("bad-name", paragraph_flow(str(tmp_path)))
    with pytest.raises(NamingError, match="reserved"):
        cocoindex.open_flow("__hidden", paragraph_flow(str(tmp_path)))
    flow = cocoindex.open_flow("BadTable", paragraph_flow(str(tmp_path), table_name="no spaces"))
    with pytest.raises(NamingError, match="'no spaces'"):
        flow.setup()
    long_name = "t" * 64
    flow = cocoindex.open_flow("LongTable", paragraph_flow(str(tmp_path), table_name=long_name))
    with pytest.raises(NamingError, match="63 bytes"):
        flow.setup()
    assert sql.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
