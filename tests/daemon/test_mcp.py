"""`cocod mcp`: an MCP client of the official SDK drives the server over stdio, and the
server answers from a real daemon over its control socket, importing nothing heavy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.conftest import write
from tests.daemon.harness import COCOD, ROOT, DaemonProcess, eventually, instance
from tests.daemon.harness_search import loaded_modules_of, pids_running

SECRET = "the mcp server finds\nthis paragraph"


def structured(result: Any) -> Any:
    """A tool's structured result (a list comes wrapped as ``{"result": [...]}``)."""
    assert not result.is_error, result.content
    value = result.structured_content
    if isinstance(value, dict) and set(value) == {"result"}:
        return value["result"]
    return value


def test_an_mcp_client_lists_the_tools_and_searches_through_the_daemon(
    tmp_path: Path, database_url: str
) -> None:
    write(tmp_path / "notes" / "a.md", f"first paragraph\n\n{SECRET}\n")
    write(tmp_path / "code" / "b.md", "code paragraph\n")
    config = instance("notes", tmp_path / "notes", "mcp_notes") + instance(
        "code", tmp_path / "code", "mcp_code"
    )
    daemon = DaemonProcess(tmp_path, database_url, config).start()
    try:
        for name in ("notes", "code"):
            eventually(lambda n=name: daemon.state(n) == "WATCHING", f"{name} to watch")
        outcome = anyio.run(_drive_mcp, daemon)
    finally:
        daemon.stop()

    tools, hits, listing, status = (outcome[k] for k in ("tools", "hits", "listing", "status"))
    updated, progress, unknown = outcome["updated"], outcome["progress"], outcome["unknown"]
    assert tools == {"search", "list_instances", "status", "update"}
    best = hits["results"][0]
    assert (best["instance"], best["filename"], best["text"]) == ("notes", "a.md", SECRET)
    assert (best["start_line"], best["end_line"]) == (3, 4)
    assert {h["instance"] for h in hits["results"]} == {"notes", "code"}
    assert {r["name"] for r in listing} == {"notes", "code"}
    assert status[0]["name"] == "notes" and status[0]["state"] == "WATCHING"
    assert updated["name"] == "code" and "stats" in updated
    # The pass's progress reaches the client as MCP progress notifications.
    assert progress and progress[-1][:2] == (1.0, 1.0), progress
    assert "code: 1 / 1 files" in str(progress[-1][2])
    # A daemon error is the tool's error result, with the daemon's code for the model.
    assert unknown.is_error and "unknown_flow" in unknown.content[0].text
    # The server is a thin client: the daemon embeds; no torch (nor asyncpg) here.
    assert "torch" not in outcome["maps"] and "asyncpg" not in outcome["maps"]


async def _drive_mcp(daemon: DaemonProcess) -> dict[str, Any]:
    server = StdioServerParameters(
        command=COCOD[0],
        args=[*COCOD[1:], "mcp", "--socket", str(daemon.socket)],
        env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        cwd=str(daemon.workdir),
    )
    with anyio.fail_after(120):
        async with (
            stdio_client(server, errlog=sys.stderr) as (read, write_),
            ClientSession(read, write_) as session,
        ):
            await session.initialize()
            tools = {t.name for t in (await session.list_tools()).tools}
            hits = structured(await session.call_tool("search", {"query": SECRET, "top": 10}))
            listing = structured(await session.call_tool("list_instances", {}))
            status = structured(await session.call_tool("status", {"name": "notes"}))
            reported: list[tuple[float, float | None, str | None]] = []

            async def on_progress(
                progress: float, total: float | None, message: str | None
            ) -> None:
                reported.append((progress, total, message))

            arguments: dict[str, Any] = {"name": "code", "full_reprocess": True}
            updated = structured(
                await session.call_tool("update", arguments, progress_callback=on_progress)
            )
            unknown = await session.call_tool("search", {"query": "x", "instances": ["nope"]})
            (pid,) = [p for p in pids_running(str(daemon.socket)) if _is_mcp(p)]
            maps = loaded_modules_of(pid)
    return {
        "tools": tools,
        "hits": hits,
        "listing": listing,
        "status": status,
        "updated": updated,
        "progress": reported,
        "unknown": unknown,
        "maps": maps,
    }


def _is_mcp(pid: int) -> bool:
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return b"mcp" in cmdline


def test_without_the_sdk_mcp_says_what_to_install(tmp_path: Path) -> None:
    """A Python without the `mcp` package (hidden here by a stub that fails to import)."""
    blocker = tmp_path / "no_mcp"
    write(blocker / "mcp" / "__init__.py", "raise ImportError('No module named mcp')\n")
    result = subprocess.run(
        [*COCOD, "mcp", "--socket", str(tmp_path / "none.sock")],
        env={"PYTHONPATH": f"{blocker}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'cocod[mcp]'" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
