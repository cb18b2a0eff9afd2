"""The rest of the v0 API surface: custom executors, UUIDs, batching, async use, stats."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path

import anyio
import pytest

import cocod as cocoindex
from cocod.errors import FlowDefinitionError
from tests.conftest import SqlHelper, write
from tests.flows import paragraph_flow


class AppendSuffix(cocoindex.op.FunctionSpec):
    suffix: str


@cocoindex.op.executor_class()
class AppendSuffixExecutor:
    spec: AppendSuffix
    prepared: bool = False

    def prepare(self) -> None:
        self.prepared = True

    def __call__(self, text: str) -> str:
        assert self.prepared
        return text + self.spec.suffix


BATCH_SIZES: list[int] = []


@cocoindex.op.function(batching=True, max_batch_size=3)
def shout(texts: list[str]) -> list[str]:
    BATCH_SIZES.append(len(texts))
    return [t.upper() for t in texts]


def _uuid_flow(source: str):  # type: ignore[no-untyped-def]
    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["files"] = fb.add_source(cocoindex.sources.LocalFile(path=source))
        out = scope.add_collector()
        with scope["files"].row() as f:
            f["tagged"] = f["content"].transform(AppendSuffix(suffix="!"))
            f["loud"] = f["tagged"].transform(shout)
            out.collect(id=cocoindex.GeneratedField.UUID, filename=f["filename"], loud=f["loud"])
        out.export("rows", cocoindex.targets.Postgres(), primary_key_fields=["id"])

    return define


def test_executor_class_batching_and_stable_uuids(tmp_path: Path, sql: SqlHelper) -> None:
    docs = tmp_path / "docs"
    for i in range(7):
        write(docs / f"f{i}.txt", f"text {i}")
    flow = cocoindex.open_flow("Uuids", _uuid_flow(str(docs)))
    flow.setup()
    BATCH_SIZES.clear()
    flow.update()
    assert sum(BATCH_SIZES) == 7 and max(BATCH_SIZES) <= 3
    rows = {r["filename"]: (r["id"], r["loud"]) for r in sql.fetch("SELECT * FROM uuids__rows")}
    assert rows["f3.txt"][1] == "TEXT 3!"
    assert all(isinstance(v[0], uuid.UUID) for v in rows.values())

    write(docs / "f3.txt", "changed")
    flow.update(reexport_targets=True)
    again = {r["filename"]: (r["id"], r["loud"]) for r in sql.fetch("SELECT * FROM uuids__rows")}
    assert len(again) == 7
    for name, (row_id, _) in rows.items():
        if name != "f3.txt":
            assert again[name][0] == row_id, "UUIDs stay stable while values are unchanged"
    assert again["f3.txt"][1] == "CHANGED!"


def test_sync_api_from_an_event_loop_worker_thread_and_async_api(
    tmp_path: Path, sql: SqlHelper
) -> None:
    write(tmp_path / "docs" / "a.md", "x\n\ny")
    flow = cocoindex.open_flow("Threads", paragraph_flow(str(tmp_path / "docs")))

    async def main() -> int:
        await anyio.to_thread.run_sync(flow.setup)
        info = await anyio.to_thread.run_sync(flow.update)
        assert info.stats["documents"]["num_insertions"] == 1
        write(tmp_path / "docs" / "b.md", "z")
        info = await flow.update_async()
        return int(info.stats["documents"]["num_insertions"])

    assert asyncio.run(main()) == 1
    assert sql.fetchval("SELECT count(*) FROM threads__paragraphs") == 3


def test_sync_api_inside_a_running_loop_warns(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "docs" / "a.md", "x")
    flow = cocoindex.open_flow("Warns", paragraph_flow(str(tmp_path / "docs")))

    async def main() -> None:
        with pytest.warns(RuntimeWarning, match="_async"):
            flow.setup()

    asyncio.run(main())


def test_update_stats_printed_form(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "docs" / "a.md", "x")
    write(tmp_path / "docs" / "b.md", "y")
    flow = cocoindex.open_flow("Printed", paragraph_flow(str(tmp_path / "docs")))
    flow.setup()
    flow.update()
    write(tmp_path / "docs" / "a.md", "x2")
    (tmp_path / "docs" / "b.md").unlink()
    write(tmp_path / "docs" / "c.md", "z")
    info = flow.update()
    assert info.stats["documents"] == {
        "num_no_change": 0,
        "num_insertions": 1,
        "num_deletions": 1,
        "num_updates": 1,
        "num_reprocesses": 0,
        "num_errors": 0,
        "processing": {"num_starts": 3, "num_ends": 3},
    }
    assert str(info) == (
        "documents: ▕" + "█" * 40 + "▏3/3 source rows: 1 added, 1 updated, 1 deleted"
    )


def test_open_flow_registry_rules(tmp_path: Path, sql: SqlHelper) -> None:
    flow = cocoindex.open_flow("Reg", paragraph_flow(str(tmp_path)))
    with pytest.raises(KeyError, match="already exists"):
        cocoindex.open_flow("Reg", paragraph_flow(str(tmp_path)))
    assert cocoindex.flow_by_name("Reg") is flow
    assert "Reg" in cocoindex.flow_names()
    flow.close()
    assert "Reg" not in cocoindex.flow_names()
    reopened = cocoindex.open_flow("Reg", paragraph_flow(str(tmp_path)))
    assert reopened.name == "Reg"


def test_cache_without_behavior_version_is_a_definition_error(
    tmp_path: Path, sql: SqlHelper
) -> None:
    @cocoindex.op.function(cache=True)
    def unversioned(text: str) -> str:
        return text

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["files"] = fb.add_source(cocoindex.sources.LocalFile(path=str(tmp_path)))
        with scope["files"].row() as f:
            f["x"] = f["content"].transform(unversioned)

    flow = cocoindex.open_flow("Unversioned", define)
    with pytest.raises(FlowDefinitionError, match="behavior_version"):
        flow.setup()


@dataclasses.dataclass
class Chunk:
    n: int
    body: str


@cocoindex.op.function()
def halves(text: str) -> list[Chunk]:
    mid = len(text) // 2
    return [Chunk(0, text[:mid]), Chunk(1, text[mid:])]


def test_struct_and_table_outputs_with_nested_rows(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "docs" / "a.txt", "abcdef")

    def define(fb: cocoindex.FlowBuilder, scope: cocoindex.DataScope) -> None:
        scope["files"] = fb.add_source(cocoindex.sources.LocalFile(path=str(tmp_path / "docs")))
        out = scope.add_collector()
        with scope["files"].row() as f:
            f["parts"] = f["content"].transform(halves)
            with f["parts"].row() as part:
                out.collect(
                    filename=f["filename"], n=part["n"], body=part["body"], parts=f["parts"]
                )
        out.export("parts", cocoindex.targets.Postgres(), primary_key_fields=["filename", "n"])

    flow = cocoindex.open_flow("Nested", define)
    flow.setup()
    flow.update()
    rows = sql.fetch("SELECT n, body, parts FROM nested__parts ORDER BY n")
    assert [(r["n"], r["body"]) for r in rows] == [(0, "abc"), (1, "def")]
    assert '"body": "abc"' in rows[0]["parts"]  # a table value is stored as jsonb
