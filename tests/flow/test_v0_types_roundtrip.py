"""Every Python type of docs/types.md, through a real flow into real Postgres and back.

A custom function returns one value of each type; each is collected into its own column.
The test checks the column type Postgres reports (``format_type``) and the value read back,
and that docs/types.md lists the same Python type → Postgres type pairs, so the table users
read cannot drift from what setup creates.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import uuid
from pathlib import Path
from typing import Any, Literal

import numpy as np

import cocod as cocoindex
from cocod.flow.types import LocalDateTime
from tests.conftest import SqlHelper, write

UTC = datetime.UTC
PLUS2 = datetime.timezone(datetime.timedelta(hours=2))


@dataclasses.dataclass
class Item:
    name: str
    when: datetime.date


@dataclasses.dataclass
class Inner:
    a: int
    b: str


@dataclasses.dataclass
class Record:
    text: str
    flag: bool
    count: int
    ratio: float
    ratio32: cocoindex.Float32
    span: cocoindex.Range
    raw: bytes
    moment: datetime.datetime
    moment_aware: datetime.datetime
    local_moment: LocalDateTime
    day: datetime.date
    clock: datetime.time
    ident: uuid.UUID
    duration: datetime.timedelta
    mapping: dict[str, Any]
    payload: cocoindex.Json
    items: list[Item]
    keyed: dict[str, Inner]
    inner: Inner
    vec: cocoindex.Vector[float, Literal[3]]
    vec32: cocoindex.Vector[np.float32, Literal[4]]
    offset_moment: cocoindex.OffsetDateTime
    floats: list[float]
    words: list[str]
    either: int | str
    maybe: str | None


VALUES: dict[str, Any] = {
    "text": "héllo",
    "flag": True,
    "count": 2**40,
    "ratio": 0.1,
    "ratio32": 0.5,
    "span": (3, 9),
    "raw": b"\x00\xffbin",
    "moment": datetime.datetime(2024, 5, 1, 12, 30, 15, 123456),  # naive: stored as UTC
    "moment_aware": datetime.datetime(2024, 5, 1, 12, 30, tzinfo=PLUS2),
    "local_moment": datetime.datetime(2024, 5, 1, 8, 0),
    "day": datetime.date(2024, 2, 29),
    "clock": datetime.time(23, 59, 58, 5),
    "ident": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "duration": datetime.timedelta(days=2, seconds=3, microseconds=4),
    "mapping": {"k": [1, 2, {"x": None}], "s": "v"},
    "payload": [1, "two", {"three": 3.0}],
    "items": [Item("a", datetime.date(2024, 1, 2)), Item("b", datetime.date(2024, 1, 3))],
    "keyed": {"k1": Inner(1, "one")},
    "inner": Inner(7, "seven"),
    "vec": [1.0, 2.5, -3.0],
    "vec32": np.asarray([0.25, 0.5, 0.75, 1.0], dtype=np.float32),
    "offset_moment": datetime.datetime(2024, 5, 1, 23, 0, tzinfo=PLUS2),
    "floats": [0.5, 1.5],
    "words": ["a", "b"],
    "either": "text this time",
    "maybe": None,
}

# Python type as docs/types.md names it → (field, Postgres column type as format_type prints).
EXPECTED: dict[str, tuple[str, str]] = {
    "str": ("text", "text"),
    "bool": ("flag", "boolean"),
    "int": ("count", "bigint"),
    "float": ("ratio", "double precision"),
    "cocoindex.Float32": ("ratio32", "real"),
    "cocoindex.Range": ("span", "int8range"),
    "bytes": ("raw", "bytea"),
    "datetime.datetime": ("moment", "timestamp with time zone"),
    "cocoindex.LocalDateTime": ("local_moment", "timestamp without time zone"),
    "datetime.date": ("day", "date"),
    "datetime.time": ("clock", "time without time zone"),
    "uuid.UUID": ("ident", "uuid"),
    "datetime.timedelta": ("duration", "interval"),
    "dict[str, Any]": ("mapping", "jsonb"),
    "cocoindex.Json": ("payload", "jsonb"),
    "list[Struct]": ("items", "jsonb"),
    "dict[K, Struct]": ("keyed", "jsonb"),
    "Struct": ("inner", "jsonb"),
    "cocoindex.Vector[float, Literal[3]]": ("vec", "vector(3)"),
    "cocoindex.Vector[np.float32, Literal[4]]": ("vec32", "vector(4)"),
    "cocoindex.OffsetDateTime": ("offset_moment", "timestamp with time zone"),
    "list[float]` / `cocoindex.Vector[float]": ("floats", "jsonb"),
    "list[str]": ("words", "jsonb"),
    "int \\| str": ("either", "jsonb"),
}


@cocoindex.op.function()
def make_record(content: str) -> Record:
    del content
    return Record(**VALUES)


def _flow(source: str):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["files"] = fb.add_source(cocoindex.sources.LocalFile(path=source))
        out = scope.add_collector()
        with scope["files"].row() as f:
            f["rec"] = f["content"].transform(make_record)
            out.collect(filename=f["filename"], **{name: f["rec"][name] for name in VALUES})
        out.export("typed", cocoindex.targets.Postgres(), primary_key_fields=["filename"])

    return define


def test_every_v0_type_round_trips_through_postgres(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "docs" / "a.txt", "x")
    flow = cocoindex.open_flow("Types", _flow(str(tmp_path / "docs")))
    flow.setup()
    flow.update()

    columns = {
        r[0]: r[1]
        for r in sql.fetch(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = 'types__typed'::regclass AND a.attnum > 0"
        )
    }
    for label, (field, pg_type) in EXPECTED.items():
        assert columns[field] == pg_type, label
    assert columns["moment_aware"] == "timestamp with time zone"

    (row,) = sql.fetch("SELECT * FROM types__typed")
    assert row["text"] == "héllo" and row["flag"] is True and row["count"] == 2**40
    assert row["ratio"] == 0.1 and row["ratio32"] == 0.5
    assert (row["span"].lower, row["span"].upper) == (3, 9)
    assert row["raw"] == b"\x00\xffbin"
    assert row["moment"] == VALUES["moment"].replace(tzinfo=UTC)
    assert row["moment_aware"] == VALUES["moment_aware"]  # the same instant
    assert row["moment_aware"].astimezone(UTC).hour == 10
    assert row["local_moment"] == VALUES["local_moment"] and row["local_moment"].tzinfo is None
    assert row["day"] == VALUES["day"] and row["clock"] == VALUES["clock"]
    assert row["ident"] == VALUES["ident"]
    assert row["duration"] == VALUES["duration"]
    assert _json(row["mapping"]) == VALUES["mapping"]
    assert _json(row["payload"]) == VALUES["payload"]
    assert _json(row["items"]) == [
        {"name": "a", "when": "2024-01-02"},
        {"name": "b", "when": "2024-01-03"},
    ]
    assert _json(row["keyed"]) == [{"_key": "k1", "a": 1, "b": "one"}]  # v0's KTable JSON
    assert _json(row["inner"]) == {"a": 7, "b": "seven"}
    assert row["offset_moment"] == VALUES["offset_moment"]
    assert _json(row["floats"]) == [0.5, 1.5] and _json(row["words"]) == ["a", "b"]
    assert _json(row["either"]) == "text this time"
    assert row["maybe"] is None and columns["maybe"] == "text"
    (vectors,) = sql.fetch("SELECT vec::real[] AS vec, vec32::real[] AS vec32 FROM types__typed")
    assert list(vectors["vec"]) == [1.0, 2.5, -3.0]
    assert list(vectors["vec32"]) == [0.25, 0.5, 0.75, 1.0]

    # A second pass over unchanged data finds nothing to write: values compare equal
    # after the round trip through the memo/tracking encoding.
    info = flow.update()
    assert info.stats["files"]["num_no_change"] == 1


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def test_docs_types_table_matches_what_setup_creates() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "types.md").read_text()
    rows: dict[str, str] = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        column = re.search(r"`([^`]+)`", cells[2]) if len(cells) >= 3 else None
        if column and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = column.group(1)
    for label, (_, pg_type) in EXPECTED.items():
        assert rows.get(label) == pg_type, f"docs/types.md row for {label}"
