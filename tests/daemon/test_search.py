"""`cocod search`: one query over several instances of a real daemon, merged by score,
with the line range of each hit in its file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write
from tests.daemon.harness import DaemonProcess, eventually, instance
from tests.daemon.harness_search import located_instance

GUIDE = "# Guide\n\nalpha intro paragraph\n\nsecond alpha\nparagraph spans\nthree lines\n"
NOTES = "beta notes\n\n\n\nthe beta paragraph\nover two lines\n"
DOC = "# Heading\n\n" + "filler line here\n" * 8 + "\nthe located chunk sits here\n"
QUERY = "second alpha\nparagraph spans\nthree lines"


@pytest.fixture
def daemon(tmp_path: Path, database_url: str) -> Iterator[DaemonProcess]:
    write(tmp_path / "alpha" / "guide.md", GUIDE)
    write(tmp_path / "beta" / "sub" / "notes.md", NOTES)
    write(tmp_path / "docs" / "doc.md", DOC)
    config = (
        instance("alpha", tmp_path / "alpha", "search_alpha")
        + instance("beta", tmp_path / "beta", "search_beta")
        + located_instance("docs", tmp_path / "docs", "search_docs")
    )
    process = DaemonProcess(tmp_path, database_url, config).start()
    for name in ("alpha", "beta", "docs"):
        eventually(lambda n=name: process.state(n) == "WATCHING", f"{name} to watch")
    yield process
    process.stop()


def search(daemon: DaemonProcess, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = daemon.json("search", *args)
    return result


def hit_of(result: dict[str, Any], instance: str, text: str) -> dict[str, Any]:
    return next(h for h in result["results"] if h["instance"] == instance and h["text"] == text)


def test_search_merges_instances_by_score_with_line_ranges(daemon: DaemonProcess) -> None:
    result = search(daemon, QUERY, "--instance", "alpha,beta", "--top", "20")
    assert result["searched"] == ["alpha", "beta"] and result["metric"] == "cosine_similarity"
    assert {h["instance"] for h in result["results"]} == {"alpha", "beta"}
    scores = [h["score"] for h in result["results"]]
    assert scores == sorted(scores, reverse=True)  # one ranking, not one list per instance
    best = result["results"][0]
    assert (best["instance"], best["filename"], best["text"]) == ("alpha", "guide.md", QUERY)
    assert best["score"] == pytest.approx(1.0)  # the same text embeds to the same vector
    # No line columns in these tables: the lines come from the files, 1-based, inclusive.
    assert (best["start_line"], best["end_line"]) == (5, 7)
    assert (hit_of(result, "alpha", "# Guide")["start_line"], 1) == (1, 1)
    beta = hit_of(result, "beta", "the beta paragraph\nover two lines")
    assert (beta["filename"], beta["start_line"], beta["end_line"]) == ("sub/notes.md", 5, 6)
    assert beta["fields"] == {"index": 1}  # the table's other columns

    # --top caps the merged list, not each instance's.
    assert len(search(daemon, QUERY, "--instance", "alpha,beta", "--top", "2")["results"]) == 2


def test_search_without_instances_covers_every_indexed_instance(daemon: DaemonProcess) -> None:
    result = search(daemon, "the located chunk sits here", "--top", "50")
    assert result["searched"] == ["alpha", "beta", "docs"] and result["skipped"] == []
    assert {h["instance"] for h in result["results"]} == {"alpha", "beta", "docs"}
    docs = [h for h in result["results"] if h["instance"] == "docs"]
    last = next(h for h in docs if h["text"].endswith("the located chunk sits here"))
    assert (last["start_line"], last["end_line"]) == (10, 12)
    # This table has a `location` (character offsets): the lines are read there, not at
    # the first place the same text appears (lines 3-4 hold these two lines too).
    twice = next(h for h in docs if h["text"] == "filler line here\nfiller line here")
    assert (twice["start_line"], twice["end_line"]) == (8, 9)
    assert twice["fields"]["location"] == [96, 129]

    human = daemon.cli("search", QUERY, "--instance", "alpha", "--top", "1").stdout
    assert human.splitlines()[0].endswith("alpha  guide.md:5-7"), human
    assert "second alpha paragraph spans three lines" in human  # the snippet, on one line

    # A file's contents are untrusted: an escape sequence in it never reaches the terminal.
    hostile = "red \x1b[31malert\x1b[0m text"
    write(daemon.workdir / "alpha" / "hostile.md", hostile + "\n")
    eventually(
        lambda: any(h["text"] == hostile for h in search(daemon, hostile, "--top", "1")["results"]),
        "the hostile file to be indexed",
    )
    shown = daemon.cli("search", hostile, "--top", "1").stdout
    assert "\x1b" not in shown and "red \ufffd[31malert" in shown, shown


def test_search_refuses_what_it_cannot_search(daemon: DaemonProcess) -> None:
    unknown = daemon.cli("search", "x", "--instance", "alpha,nope", "--json", check=False)
    assert unknown.returncode == 1
    assert json.loads(unknown.stdout)["error"]["code"] == "unknown_flow"
    assert "nope" in unknown.stderr
    # Over the socket the instances are a JSON list; other shapes are bad_args.
    listed = daemon.request("search", text=QUERY, instance=["beta", "alpha"], top=1)
    assert listed["ok"] and listed["result"]["searched"] == ["beta", "alpha"]
    assert listed["result"]["results"][0]["instance"] == "alpha"
    bad = daemon.request("search", text=QUERY, instance=[1])
    assert bad["error"]["code"] == "bad_args"
    assert daemon.request("search", text=QUERY, top=0)["error"]["code"] == "bad_args"


def test_scores_of_different_metrics_are_not_merged(tmp_path: Path, database_url: str) -> None:
    write(tmp_path / "a" / "a.md", "alpha words\n")
    write(tmp_path / "b" / "b.md", "beta words\n")
    config = located_instance("near", tmp_path / "a", "metric_cos") + located_instance(
        "far", tmp_path / "b", "metric_l2", metric="l2"
    )
    daemon = DaemonProcess(tmp_path, database_url, config).start()
    try:
        for name in ("near", "far"):
            eventually(lambda n=name: daemon.state(n) == "WATCHING", f"{name} to watch")
        mixed = daemon.cli("search", "alpha words", check=False)
        assert mixed.returncode == 1
        assert "bad_args" in mixed.stderr and "l2_distance: far" in mixed.stderr
        assert "cosine_similarity: near" in mixed.stderr
        alone = search(daemon, "beta words", "--instance", "far")
        assert alone["higher_is_better"] is False and alone["metric"] == "l2_distance"
        assert alone["results"][0]["score"] == pytest.approx(0.0)  # distance to itself
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    ("content", "text", "location", "lines"),
    [
        ("a\nb\nc\n", "b\nc", [2, 5], (2, 3)),
        ("a\nb\nc\n", "b\nc\n", [2, 6], (2, 3)),  # a trailing newline ends the chunk's line
        ("x\nsame\nsame\n", "same", [7, 11], (3, 3)),  # at the location, not the first match
        ("x\nsame\nsame\n", "same", [0, 4], (2, 2)),  # the location moved: the first match
        ("x\nsame\n", "same", [50, 54], (2, 2)),  # out of the file: the first match
        ("x\nsame\n", "gone", None, None),  # edited away: unknown, never a wrong line
        ("only", "only", [True, 4], (1, 1)),  # a malformed location is ignored
    ],
)
def test_line_ranges_come_from_the_location_when_it_still_holds_the_text(
    content: str, text: str, location: Any, lines: tuple[int, int] | None
) -> None:
    from cocod.runtime.search import line_range

    assert line_range(content, text, location) == lines
