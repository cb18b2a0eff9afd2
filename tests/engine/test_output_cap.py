"""One source row may produce a bounded number of rows per export; over it, that row fails
before its rows are computed, and every other row is indexed."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog.testing

import cocod as cocoindex
from cocod.errors import SettingsError
from cocod.runtime.execution import max_rows_per_source_row
from tests.conftest import SqlHelper, write
from tests.flows import EMBED_CALLS, paragraph_flow


def test_a_row_over_the_cap_is_its_own_error_naming_count_and_knob(
    tmp_path: Path, sql: SqlHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COCOD_MAX_ROWS_PER_SOURCE_ROW", "5")
    docs = tmp_path / "docs"
    write(docs / "small.md", "one\n\ntwo")
    write(docs / "huge.md", "\n\n".join(f"paragraph number {i}" for i in range(40)))
    flow = cocoindex.open_flow("Capped", paragraph_flow(str(docs)))
    flow.setup()
    before = len(EMBED_CALLS)
    with structlog.testing.capture_logs() as logs:
        info = flow.update()
    assert info.stats["documents"]["num_errors"] == 1
    assert info.stats["documents"]["num_insertions"] == 1
    (failure,) = [e for e in logs if e.get("log_level") == "error"]
    assert failure["key"] == "huge.md"
    assert "40 rows" in str(failure["error"]) and "limit of 5" in str(failure["error"])
    assert "COCOD_MAX_ROWS_PER_SOURCE_ROW" in str(failure["error"])
    # Refused before the embedder saw any of its paragraphs.
    assert sorted(EMBED_CALLS[before:]) == ["one", "two"]
    assert sql.fetchval("SELECT count(*) FROM capped__paragraphs") == 2
    monkeypatch.setenv("COCOD_MAX_ROWS_PER_SOURCE_ROW", "100")
    info = flow.update()
    assert info.stats["documents"]["num_insertions"] == 1
    assert sql.fetchval("SELECT count(*) FROM capped__paragraphs") == 42


def test_the_cap_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COCOD_MAX_ROWS_PER_SOURCE_ROW", raising=False)
    assert max_rows_per_source_row(object()) == 100_000
    monkeypatch.setenv("COCOD_MAX_ROWS_PER_SOURCE_ROW", "2_000")
    assert max_rows_per_source_row(object()) == 2_000
    for bad in ("lots", "0"):
        monkeypatch.setenv("COCOD_MAX_ROWS_PER_SOURCE_ROW", bad)
        with pytest.raises(SettingsError, match="COCOD_MAX_ROWS_PER_SOURCE_ROW"):
            max_rows_per_source_row(object())
