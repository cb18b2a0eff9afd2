"""ParseJson: v0's function, with its language hint, in a real flow into Postgres."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cocod as cocoindex
from cocod.errors import RowError
from cocod.executors.json_parse import parse_json
from cocod.functions import DetectProgrammingLanguage, ParseJson
from tests.conftest import SqlHelper, write


@pytest.mark.parametrize("language", [None, "json", "JSON", ".json", "yaml"])
def test_parses_json_whatever_the_hint(language: str | None) -> None:
    assert parse_json('{"a": [1, 2.5, null, "x"]}', language) == {"a": [1, 2.5, None, "x"]}


def test_invalid_json_is_a_row_error_that_says_where() -> None:
    with pytest.raises(RowError, match=r"not valid JSON .*line 2 column"):
        parse_json('{"a": 1,\n oops}')


@pytest.mark.parametrize("text", ['{"x": NaN}', "[Infinity]", "-Infinity"])
def test_non_finite_numbers_are_refused_as_v0_does(text: str) -> None:
    with pytest.raises(RowError, match="not valid JSON"):
        parse_json(text)


def test_parse_json_in_a_flow(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "docs" / "good.json", '{"name": "cocod", "tags": ["a", "b"]}')
    write(tmp_path / "docs" / "bad.json", "{nope")
    source = str(tmp_path / "docs")

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["files"] = fb.add_source(cocoindex.sources.LocalFile(path=source))
        out = scope.add_collector()
        with scope["files"].row() as f:
            f["language"] = f["filename"].transform(DetectProgrammingLanguage())
            f["data"] = f["content"].transform(ParseJson(), language=f["language"])
            out.collect(filename=f["filename"], data=f["data"])
        out.export("docs", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

    flow = cocoindex.open_flow("Parsed", define)
    flow.setup()
    info = flow.update()
    assert info.stats["files"]["num_errors"] == 1  # bad.json fails alone
    rows = {r["filename"]: r["data"] for r in sql.fetch("SELECT * FROM parsed__docs")}
    assert list(rows) == ["good.json"]
    data = rows["good.json"]
    assert (json.loads(data) if isinstance(data, str) else data) == {
        "name": "cocod",
        "tags": ["a", "b"],
    }
    column = sql.fetchval(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'parsed__docs'::regclass AND attname = 'data'"
    )
    assert column == "jsonb"
