"""blockbuster is active in the runtime tests: a blocking call on the library loop fails."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from blockbuster import BlockBuster, BlockingError

import cocod
from cocod.runtime.bridge import bridge
from tests.conftest import SqlHelper, write


async def _sleeps_on_the_loop() -> None:
    time.sleep(0.01)  # noqa: ASYNC251 (deliberately blocking: what blockbuster must catch)


def test_a_blocking_call_in_a_coroutine_on_the_library_loop_raises(
    active_blockbusters: list[BlockBuster],
) -> None:
    assert active_blockbusters, "blockbuster is not active for runtime test bodies"
    with pytest.raises(BlockingError, match=r"time\.sleep"):
        bridge.run(_sleeps_on_the_loop())


@cocod.op.function()
async def _blocking_transform(text: str) -> str:
    time.sleep(0.01)  # noqa: ASYNC251 (a user function that blocks its loop)
    return text


def _define(path: str) -> cocod.FlowDef:  # type: ignore[name-defined]
    def define(fb: cocod.FlowBuilder, scope: cocod.DataScope) -> None:
        scope["files"] = fb.add_source(cocod.sources.LocalFile(path=path))
        out = scope.add_collector()
        with scope["files"].row() as f:
            f["same"] = f["content"].transform(_blocking_transform)
            out.collect(filename=f["filename"], same=f["same"])
        out.export("rows", cocod.targets.Postgres(), primary_key_fields=["filename"])

    return define


def test_a_blocking_function_in_an_update_pass_is_caught(tmp_path: Path, sql: SqlHelper) -> None:
    write(tmp_path / "docs" / "a.txt", "text")
    flow = cocod.open_flow("Blocks", _define(str(tmp_path / "docs")))
    flow.setup()
    info = flow.update()
    # The row fails with BlockingError (a row error: the pass itself goes on).
    assert info.sources["files"].num_errors == 1
    assert sql.fetchval("SELECT count(*) FROM blocks__rows") == 0
