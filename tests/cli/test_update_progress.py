"""``Flow.update(progress=...)``: the callback sees each source pass advance, sync and async."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

import cocod as cocoindex
from cocod.engine.progress import PassProgress
from tests.conftest import write
from tests.flows import paragraph_flow


def _docs(tmp_path: Path) -> Path:
    for i in range(3):
        write(tmp_path / "docs" / f"{i}.md", f"Paragraph {i}.\n\nAnother {i}.")
    return tmp_path / "docs"


def test_update_reports_progress_to_the_callback(tmp_path: Path, cocod_db: str) -> None:
    flow = cocoindex.open_flow("Progress", paragraph_flow(str(_docs(tmp_path))))
    flow.setup()
    seen: list[dict[str, Any]] = []
    objects: set[int] = set()

    def on_progress(progress: PassProgress) -> None:
        objects.add(id(progress))
        seen.append(progress.as_dict())

    info = flow.update(progress=on_progress)
    assert info.stats["documents"]["num_insertions"] == 3
    assert seen, "the callback was never called"
    assert len(objects) == 1  # one source, one pass: the same object, updated
    last = seen[-1]
    assert (last["source"], last["listed"], last["candidates"]) == ("documents", 3, 3)
    assert (last["processed"], last["chunks"], last["finished"]) == (3, 6, True)
    processed = [s["processed"] for s in seen]
    assert processed == sorted(processed)  # never goes backwards

    # A second pass reports with a new object (files this recent are hashed again, so
    # they may be candidates; none is written again).
    again: list[PassProgress] = []
    flow.update(progress=again.append)
    assert again and again[-1].finished and id(again[-1]) not in objects
    assert again[-1].processed == again[-1].candidates


def test_a_failing_callback_does_not_fail_the_update(tmp_path: Path, cocod_db: str) -> None:
    flow = cocoindex.open_flow("BadProgress", paragraph_flow(str(_docs(tmp_path))))
    flow.setup()
    calls = 0

    def broken(progress: PassProgress) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("a progress bar bug")

    info = flow.update(progress=broken)
    assert calls > 0
    assert info.stats["documents"]["num_insertions"] == 3


def test_update_async_takes_the_callback_too(tmp_path: Path, cocod_db: str) -> None:
    flow = cocoindex.open_flow("AsyncProgress", paragraph_flow(str(_docs(tmp_path))))
    flow.setup()
    seen: list[PassProgress] = []

    async def main() -> None:
        await flow.update_async(progress=seen.append)

    anyio.run(main)
    assert seen and seen[-1].processed == 3 and seen[-1].finished
