"""Model-based test: any sequence of file operations, each followed by update(), leaves
the target exactly equal to a from-scratch build of the current files, and the memoized
function is never called twice for the same text within one flow instance."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import cocod as cocoindex
from tests.conftest import SqlHelper
from tests.flows import EMBED_CALLS, paragraph_flow, paragraphs_of, tiny_vector

PARAGRAPHS = [
    "Shared opening paragraph.",
    "Postgres keeps the vectors.",
    "A short one.",
    "Incremental updates only touch changed rows.",
    "Memoized embeddings are reused.",
    "Ünïcödé paragraph — with CJK 向量 text.",
    "Tiny",
]
NAMES = ["a.md", "b.md", "sub/c.md", "sub/deeper/d.md", "e.md"]
_instances = itertools.count()

contents = st.lists(st.sampled_from(PARAGRAPHS), min_size=0, max_size=5).map("\n\n".join)


class IndexModel(RuleBasedStateMachine):
    sql: SqlHelper

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="cocod-model-"))
        self.docs = self.root / "docs"
        self.docs.mkdir()
        self.files: dict[str, str] = {}
        self.history: dict[str, list[tuple[str, int]]] = {}
        self.min_length = 0
        self.name = f"Model{next(_instances)}"
        self.table = f"model_{self.name.lower()}"
        self.flow: cocoindex.Flow | None = None
        self.seen: set[str] = set()
        self.calls_before = len(EMBED_CALLS)

    def _open(self) -> None:
        if self.flow is not None:
            self.flow.close()
        self.flow = cocoindex.open_flow(
            self.name,
            paragraph_flow(str(self.docs), table_name=self.table, min_length=self.min_length),
        )
        self.flow.setup()

    @initialize()
    def start(self) -> None:
        self._open()

    def _write(self, name: str, text: str, mtime_ns: int | None = None) -> None:
        path = self.docs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if mtime_ns is not None:
            os.utime(path, ns=(mtime_ns, mtime_ns))
        self.files[name] = text
        self.history.setdefault(name, []).append((text, path.stat().st_mtime_ns))

    @rule(name=st.sampled_from(NAMES), text=contents)
    def create_or_modify(self, name: str, text: str) -> None:
        self._write(name, text)

    @precondition(lambda self: bool(self.files))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.files)))
        (self.docs / name).unlink()
        del self.files[name]

    @precondition(lambda self: bool(self.files))
    @rule(data=st.data(), new_name=st.sampled_from(NAMES))
    def rename(self, data: st.DataObject, new_name: str) -> None:
        name = data.draw(st.sampled_from(sorted(self.files)))
        if name == new_name:
            return
        (self.docs / new_name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.docs / name, self.docs / new_name)
        self.files[new_name] = self.files.pop(name)

    @precondition(lambda self: bool(self.files))
    @rule(data=st.data())
    def touch_same_content(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.files)))
        path = self.docs / name
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))

    @precondition(lambda self: any(len(h) > 1 for h in self.history.values()))
    @rule(data=st.data())
    def restore_older_version(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(n for n, h in self.history.items() if len(h) > 1)))
        text, mtime_ns = data.draw(st.sampled_from(self.history[name][:-1]))
        self._write(name, text, mtime_ns=mtime_ns)

    @rule(min_length=st.sampled_from([0, 5, 12]))
    def change_flow_parameter(self, min_length: int) -> None:
        self.min_length = min_length
        self._open()

    @invariant()
    def target_equals_from_scratch_build(self) -> None:
        assert self.flow is not None
        info = self.flow.update()
        assert info.stats["documents"]["num_errors"] == 0
        expected = sorted(
            (name, p.index, p.text, tuple(tiny_vector(p.text).tolist()))
            for name, text in self.files.items()
            for p in paragraphs_of(text, self.min_length)
        )
        rows = self.sql.fetch(
            f"SELECT filename, index, text, embedding::real[] AS embedding FROM {self.table}"
        )
        actual = sorted((r["filename"], r["index"], r["text"], tuple(r["embedding"])) for r in rows)
        assert actual == expected
        new_calls = EMBED_CALLS[self.calls_before :]
        self.calls_before = len(EMBED_CALLS)
        assert len(new_calls) == len(set(new_calls)), f"computed twice in one pass: {new_calls}"
        again = self.seen.intersection(new_calls)
        assert not again, f"memoized function called again for {again}"
        self.seen.update(new_calls)

    def teardown(self) -> None:
        if self.flow is not None:
            self.flow.close()
        shutil.rmtree(self.root, ignore_errors=True)


def test_random_edit_sequences_converge(sql: SqlHelper) -> None:
    IndexModel.sql = sql
    run_state_machine_as_test(
        IndexModel,
        settings=settings(
            max_examples=12,
            stateful_step_count=14,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
