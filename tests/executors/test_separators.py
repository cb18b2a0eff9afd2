"""SplitBySeparators gives v0's rows. The expected rows are what CocoIndex 0.3.39 returned
for the same inputs (``keep_separator=None`` there: 0.3.39 rejects its own default "NONE",
which cocod accepts as the same thing), plus one run through a real flow into Postgres.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import cocod as cocoindex
from cocod.errors import FlowDefinitionError
from cocod.executors.separators import SeparatorSplitter
from cocod.functions import SplitBySeparators
from tests.conftest import SqlHelper, write

Row = tuple[tuple[int, int], str, tuple[int, int, int], tuple[int, int, int]]

V0_CASES: list[tuple[str, dict[str, Any], list[Row]]] = [
    (
        "Para1\n\nPara2\n\n\nPara3",
        {"separators_regex": [r"\n\n+"]},
        [
            ((0, 5), "Para1", (0, 1, 1), (5, 1, 6)),
            ((7, 12), "Para2", (7, 3, 1), (12, 3, 6)),
            ((15, 20), "Para3", (15, 6, 1), (20, 6, 6)),
        ],
    ),
    (
        "A. B. C.",
        {"separators_regex": [r"\."], "keep_separator": "LEFT"},
        [
            ((0, 2), "A.", (0, 1, 1), (2, 1, 3)),
            ((3, 5), "B.", (3, 1, 4), (5, 1, 6)),
            ((6, 8), "C.", (6, 1, 7), (8, 1, 9)),
        ],
    ),
    (
        "A. B. C",
        {"separators_regex": [r"\."], "keep_separator": "RIGHT"},
        [
            ((0, 1), "A", (0, 1, 1), (1, 1, 2)),
            ((1, 4), ". B", (1, 1, 2), (4, 1, 5)),
            ((4, 7), ". C", (4, 1, 5), (7, 1, 8)),
        ],
    ),
    ("  one  ", {}, [((2, 5), "one", (2, 1, 3), (5, 1, 6))]),
    (
        "a,,b, ,c",
        {"separators_regex": [","], "include_empty": True},
        [
            ((0, 1), "a", (0, 1, 1), (1, 1, 2)),
            ((2, 2), "", (2, 1, 3), (2, 1, 3)),
            ((3, 4), "b", (3, 1, 4), (4, 1, 5)),
            ((6, 6), "", (6, 1, 7), (6, 1, 7)),
            ((7, 8), "c", (7, 1, 8), (8, 1, 9)),
        ],
    ),
    (
        "a,,b, ,c",
        {"separators_regex": [","], "include_empty": True, "trim": False},
        [
            ((0, 1), "a", (0, 1, 1), (1, 1, 2)),
            ((2, 2), "", (2, 1, 3), (2, 1, 3)),
            ((3, 4), "b", (3, 1, 4), (4, 1, 5)),
            ((5, 6), " ", (5, 1, 6), (6, 1, 7)),
            ((7, 8), "c", (7, 1, 8), (8, 1, 9)),
        ],
    ),
    (
        "# H1\ntext\n# H2\nmore\n",
        {"separators_regex": ["^# "], "keep_separator": "RIGHT"},
        [
            ((0, 9), "# H1\ntext", (0, 1, 1), (9, 2, 5)),
            ((10, 19), "# H2\nmore", (10, 3, 1), (19, 4, 5)),
        ],
    ),
    (
        "héllo wörld\nsecond line\n\nthird",
        {"separators_regex": [r"\n\n", " "]},
        [
            ((0, 5), "héllo", (0, 1, 1), (5, 1, 6)),
            ((6, 18), "wörld\nsecond", (6, 1, 7), (18, 2, 7)),
            ((19, 23), "line", (19, 2, 8), (23, 2, 12)),
            ((25, 30), "third", (25, 4, 1), (30, 4, 6)),
        ],
    ),
    ("x\x0by", {"separators_regex": ["q"]}, [((0, 3), "x\x0by", (0, 1, 1), (3, 1, 4))]),
    ("", {"separators_regex": [","]}, []),
    ("", {"separators_regex": [","], "include_empty": True}, [((0, 0), "", (0, 1, 1), (0, 1, 1))]),
]


def _rows(text: str, spec: SplitBySeparators) -> list[Row]:
    return [
        (
            c["location"],
            c["text"],
            (c["start"]["offset"], c["start"]["line"], c["start"]["column"]),
            (c["end"]["offset"], c["end"]["line"], c["end"]["column"]),
        )
        for c in SeparatorSplitter.create(spec).split(text)
    ]


@pytest.mark.parametrize(("text", "params", "expected"), V0_CASES)
def test_rows_match_v0(text: str, params: dict[str, Any], expected: list[Row]) -> None:
    assert _rows(text, SplitBySeparators(**params)) == expected


def test_keep_separator_none_means_drop() -> None:
    text = "a;b"
    dropped = _rows(text, SplitBySeparators(separators_regex=[";"]))
    assert _rows(text, SplitBySeparators(separators_regex=[";"], keep_separator=None)) == dropped  # type: ignore[arg-type]
    assert [r[1] for r in dropped] == ["a", "b"]


def test_bad_parameters_fail_while_the_flow_is_defined() -> None:
    with pytest.raises(FlowDefinitionError, match="does not compile"):
        SeparatorSplitter.create(SplitBySeparators(separators_regex=["("]))
    with pytest.raises(FlowDefinitionError, match="keep_separator"):
        SeparatorSplitter.create(SplitBySeparators(keep_separator="MIDDLE"))  # type: ignore[arg-type]


def test_split_by_separators_in_a_flow(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "docs" / "a.md", "One.\n\nTwo.\n\n\nThree.")
    source = str(tmp_path / "docs")

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["files"] = fb.add_source(cocoindex.sources.LocalFile(path=source))
        out = scope.add_collector()
        with scope["files"].row() as f:
            f["chunks"] = f["content"].transform(SplitBySeparators(separators_regex=[r"\n\n+"]))
            with f["chunks"].row() as c:
                out.collect(
                    filename=f["filename"], location=c["location"], text=c["text"], start=c["start"]
                )
        out.export(
            "chunks", cocoindex.targets.Postgres(), primary_key_fields=["filename", "location"]
        )

    flow = cocoindex.open_flow("Separated", define)
    flow.setup()
    flow.update()
    rows = sql.fetch("SELECT lower(location) AS s, text FROM separated__chunks ORDER BY 1")
    assert [(r["s"], r["text"]) for r in rows] == [(0, "One."), (6, "Two."), (13, "Three.")]
