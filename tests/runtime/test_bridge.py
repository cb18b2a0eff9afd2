"""The sync-over-async bridge: usable from scripts, threads and a running loop's worker
threads, and Ctrl+C during a sync call stops the pass cleanly (real subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import anyio
import pytest

from cocod.runtime.bridge import bridge
from tests.conftest import SqlHelper, write

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    import anyio
    import cocod

    @cocod.op.function()
    async def slowly(text: str) -> str:
        try:
            await anyio.sleep(0.2)  # a slow user function
        except anyio.get_cancelled_exc_class():
            with open(sys.argv[3], "a") as f:  # proof that the pass was cancelled
                f.write("unwound\\n")
            raise
        return text.upper()

    def define(fb, scope):
        scope["files"] = fb.add_source(cocod.sources.LocalFile(path=sys.argv[1]))
        out = scope.add_collector()
        with scope["files"].row() as f:
            f["shout"] = f["content"].transform(slowly)
            out.collect(filename=f["filename"], shout=f["shout"])
        out.export("rows", cocod.targets.Postgres(), primary_key_fields=["filename"])

    cocod.init(cocod.Settings(database=cocod.DatabaseConnectionSpec(url=sys.argv[2])))
    flow = cocod.open_flow("Interrupted", define)
    flow.setup()
    print("READY", flush=True)
    print(flow.update(), flush=True)
    print("DONE", flush=True)
    """
)


def _start(script: Path, docs: Path, url: str, marker: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(script), str(docs), url, str(marker)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _error_lines(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if '"level": "error"' in line or "[error" in line or "ERROR" in line
    ]


def test_ctrl_c_during_a_sync_update_stops_it_cleanly(database_url: str, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    for i in range(200):
        write(docs / f"f{i:03}.txt", f"file number {i}")
    script = tmp_path / "update.py"
    script.write_text(SCRIPT)

    unwound = tmp_path / "unwound.txt"
    proc = _start(script, docs, database_url, unwound)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(1.0)  # the pass is under way (200 rows x 200 ms, 16 at a time)
        proc.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        stdout, stderr = proc.communicate(timeout=10)
        took = time.monotonic() - interrupted_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "DONE" not in stdout, "the pass finished before the signal; make it slower"
    assert took < 2.0, f"exited {took:.2f} s after SIGINT"
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in stderr
    assert not _error_lines(stderr), stderr
    # The pass was cancelled and unwound before exit, not abandoned to the exit hooks.
    assert unwound.exists() and "unwound" in unwound.read_text()

    # A second process picks up where the first stopped and converges.
    again = _start(script, docs, database_url, tmp_path / "second.txt")
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    rows = SqlHelper(database_url).fetch("SELECT filename, shout FROM interrupted__rows")
    assert sorted((r["filename"], r["shout"]) for r in rows) == [
        (f"f{i:03}.txt", f"FILE NUMBER {i}") for i in range(200)
    ]


async def _library_loop_thread() -> int:
    return threading.get_ident()


def test_sync_calls_from_threads_share_one_library_loop() -> None:
    results: list[int] = []

    def call() -> None:
        results.append(bridge.run(_library_loop_thread()))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    results.append(bridge.run(_library_loop_thread()))
    assert len(set(results)) == 1
    assert results[0] != threading.get_ident()


def test_usable_from_a_running_loop_and_its_worker_threads() -> None:
    async def main() -> tuple[int, int]:
        direct = await bridge.run_async(_library_loop_thread())
        from_worker = await anyio.to_thread.run_sync(bridge.run, _library_loop_thread())
        return direct, from_worker

    direct, from_worker = anyio.run(main)
    assert direct == from_worker != threading.get_ident()


def test_a_sync_call_on_the_library_loop_is_refused() -> None:
    async def nested() -> None:
        bridge.run(_library_loop_thread())

    with pytest.raises(RuntimeError, match="_async variant"):
        bridge.run(nested())
