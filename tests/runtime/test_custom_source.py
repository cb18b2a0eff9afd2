"""Custom sources (v0's ``@op.source_connector``): rows land in a Postgres target, and a
changed or removed source row propagates. The "remote system" is a dict the test edits."""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import NamedTuple

import pytest

import cocod as cocoindex
from cocod.errors import SourceError
from cocod.op import (
    NO_ORDINAL,
    NON_EXISTENCE,
    PartialSourceRow,
    PartialSourceRowData,
    SourceSpec,
    source_connector,
)
from tests.conftest import SqlHelper

ARTICLES: dict[tuple[str, int], tuple[int, str]] = {}
"""(site, id) → (version, body): what the remote system holds."""
READS: list[tuple[str, int]] = []
BROKEN: list[bool] = [False]


class ArticleKey(NamedTuple):
    site: str
    id: int


@dataclasses.dataclass
class Article:
    body: str
    words: int


class Articles(SourceSpec):
    site_filter: str | None = None


@source_connector(spec_cls=Articles, key_type=ArticleKey, value_type=Article)
class ArticlesConnector:
    def __init__(self, spec: Articles) -> None:
        self._spec = spec

    @staticmethod
    async def create(spec: Articles) -> ArticlesConnector:
        return ArticlesConnector(spec)

    async def list(self) -> AsyncIterator[PartialSourceRow[ArticleKey, Article]]:
        if BROKEN[0]:
            raise ConnectionError("the remote system is down")
        for (site, id_), (version, _) in sorted(ARTICLES.copy().items()):
            if self._spec.site_filter in (None, site):
                yield PartialSourceRow(
                    key=ArticleKey(site, id_), data=PartialSourceRowData(ordinal=version)
                )

    async def get_value(self, key: ArticleKey) -> PartialSourceRowData[Article]:
        assert isinstance(key, ArticleKey)
        READS.append((key.site, key.id))
        found = ARTICLES.get((key.site, key.id))
        if found is None:
            return PartialSourceRowData(value=NON_EXISTENCE, ordinal=NO_ORDINAL)
        version, body = found
        return PartialSourceRowData(value=Article(body, len(body.split())), ordinal=version)

    def provides_ordinal(self) -> bool:
        return True


NOTES: dict[str, str] = {}


@dataclasses.dataclass
class Note:
    text: str


class Notes(SourceSpec):
    pass


@source_connector(spec_cls=Notes, key_type=str, value_type=Note)
class NotesConnector:
    """Sync methods, a plain key, no ordinals: the value's fingerprint decides."""

    @staticmethod
    def create(spec: Notes) -> NotesConnector:
        return NotesConnector()

    def list(self) -> Iterator[PartialSourceRow[str, Note]]:
        for name in sorted(NOTES):
            yield PartialSourceRow(key=name, data=PartialSourceRowData())

    def get_value(self, key: str) -> PartialSourceRowData[Note]:
        if key not in NOTES:
            return PartialSourceRowData(value=NON_EXISTENCE)
        return PartialSourceRowData(value=Note(NOTES[key]))


@pytest.fixture(autouse=True)
def _reset() -> None:
    ARTICLES.clear()
    READS.clear()
    NOTES.clear()
    BROKEN[0] = False


def article_flow() -> Callable[[cocoindex.FlowBuilder, cocoindex.DataScope], None]:
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["articles"] = fb.add_source(Articles())
        out = scope.add_collector()
        with scope["articles"].row() as art:
            out.collect(site=art["site"], id=art["id"], body=art["body"], words=art["words"])
        out.export("articles", cocoindex.targets.Postgres(), primary_key_fields=["site", "id"])

    return define


def rows(sql: SqlHelper, table: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in sql.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")]


def test_custom_source_rows_reach_postgres_and_changes_propagate(sql: SqlHelper) -> None:
    ARTICLES[("news", 1)] = (1, "first story")
    ARTICLES[("news", 2)] = (1, "second story here")
    ARTICLES[("blog", 1)] = (1, "a post")
    flow = cocoindex.open_flow("ArticleFlow", article_flow())
    flow.setup()
    info = flow.update()
    assert info.stats["articles"]["num_insertions"] == 3
    assert rows(sql, "articleflow__articles") == [
        ("blog", 1, "a post", 2),
        ("news", 1, "first story", 2),
        ("news", 2, "second story here", 3),
    ]

    # Unchanged ordinals: nothing is read again.
    READS.clear()
    info = flow.update()
    assert info.stats["articles"]["num_no_change"] == 3
    assert READS == []

    # A changed row (new ordinal) and a removed one.
    ARTICLES[("news", 1)] = (2, "first story, corrected")
    del ARTICLES[("blog", 1)]
    READS.clear()
    info = flow.update()
    assert READS == [("news", 1)]  # a row gone from the listing is deleted unread (v0)
    assert info.stats["articles"]["num_updates"] == 1
    assert info.stats["articles"]["num_deletions"] == 1
    assert rows(sql, "articleflow__articles") == [
        ("news", 1, "first story, corrected", 3),
        ("news", 2, "second story here", 3),
    ]

    # list() failing is the source's error: the pass stops and deletes nothing.
    BROKEN[0] = True
    with pytest.raises(SourceError, match="the remote system is down"):
        flow.update()
    assert len(rows(sql, "articleflow__articles")) == 2


def test_sync_source_without_ordinals(sql: SqlHelper) -> None:
    NOTES.update({"a": "one", "b": "two"})

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["notes"] = fb.add_source(Notes())
        out = scope.add_collector()
        with scope["notes"].row() as note:
            out.collect(name=note["_key"], text=note["text"])
        out.export("notes", cocoindex.targets.Postgres(), primary_key_fields=["name"])

    flow = cocoindex.open_flow("NoteFlow", define)
    flow.setup()
    flow.update()
    assert rows(sql, "noteflow__notes") == [("a", "one"), ("b", "two")]
    info = flow.update()
    assert info.stats["notes"]["num_no_change"] == 2
    NOTES["a"] = "uno"
    del NOTES["b"]
    info = flow.update()
    assert (info.stats["notes"]["num_updates"], info.stats["notes"]["num_deletions"]) == (1, 1)
    assert rows(sql, "noteflow__notes") == [("a", "uno")]


def test_live_updates_poll_a_custom_source(sql: SqlHelper) -> None:
    """No change stream: the live updater lists it every refresh_interval (as v0)."""
    ARTICLES[("news", 1)] = (1, "first story")

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["articles"] = fb.add_source(
            Articles(), refresh_interval=datetime.timedelta(seconds=0.2)
        )
        out = scope.add_collector()
        with scope["articles"].row() as art:
            out.collect(site=art["site"], id=art["id"], body=art["body"])
        out.export("articles", cocoindex.targets.Postgres(), primary_key_fields=["site", "id"])

    flow = cocoindex.open_flow("LiveArticles", define)
    flow.setup()
    updater = cocoindex.FlowLiveUpdater(flow)
    updater.start()
    try:
        ARTICLES[("news", 2)] = (1, "breaking")
        deadline = time.monotonic() + 30
        while len(rows(sql, "livearticles__articles")) < 2:
            assert time.monotonic() < deadline, "the new row never arrived"
            time.sleep(0.1)
    finally:
        updater.abort()
        updater.wait()
