"""``cocod mcp``: the daemon's search, status and update as MCP tools, over stdio.

Editors and coding agents start this process and talk MCP (JSON-RPC) on its stdin and
stdout. It is a thin client of the running daemon's control socket: every tool is one
request (:class:`cocod.control.client.ControlClient`, run in a worker thread so the
server's event loop never blocks on the socket), and the daemon does the work — it
embeds the query with the model it already has loaded. This process imports neither
torch nor asyncpg, so it starts in about a second and stays small however many editors
run one.

The SDK is the optional extra ``cocod[mcp]`` (mcp 2.x: ``mcp.server.mcpserver.MCPServer``;
its 1.x name ``FastMCP`` is gone). It is imported only when the server runs, so the rest
of cocod works without it. docs/mcp.md shows how to register the server with a client.

Tools: ``search(query, instances?, top?)``, ``list_instances()``, ``status(name?)`` and
``update(name, full_reprocess?)`` (one instance, on request: the daemon keeps live
instances up to date by itself). A daemon error becomes the tool's error result, with
the daemon's code and message, so the model can read what to do.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from cocod.cli.progress_display import describe
from cocod.control.client import ControlClient, DaemonError, DaemonUnavailableError

__all__ = ["INSTALL_HINT", "build_server", "run_mcp"]

INSTALL_HINT = "pip install 'cocod[mcp]'"
SEARCH_TIMEOUT_SECONDS = 300.0
"""A first search may wait for the model to load and on-demand instances to open."""
UPDATE_TIMEOUT_SECONDS: float | None = None
"""An update runs as long as the pass takes (a first index can take an hour)."""

INSTRUCTIONS = (
    "cocod keeps vector indexes of local folders (notes, code repositories) up to date in "
    "the background. Use `search` to find the chunks of files nearest to a question "
    "(each hit has its instance, file name, 1-based line range and text); "
    "`list_instances` and `status` to see what is indexed and whether it is caught up; "
    "`update` only when asked to refresh an instance now."
)


class _Daemon:
    """The control socket, called from worker threads (the client is synchronous)."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    async def call(
        self,
        cmd: str,
        args: dict[str, Any],
        socket_timeout: float | None = 30.0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> Any:
        from mcp.server.mcpserver.exceptions import ToolError

        def call() -> Any:
            client = ControlClient(self.socket, timeout=socket_timeout)
            return client.call(cmd, args, on_event=on_event)

        try:
            return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except DaemonUnavailableError as e:
            raise ToolError(f"daemon_unavailable: {e}") from None
        except DaemonError as e:
            raise ToolError(f"{e.code}: {e.message}") from None


def build_server(socket: Path) -> Any:
    """The MCPServer with cocod's four tools, talking to the daemon on ``socket``."""
    from mcp.server.mcpserver import Context, MCPServer

    from cocod import __version__

    daemon = _Daemon(socket)
    server = MCPServer(
        name="cocod", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING"
    )

    @server.tool()
    async def search(
        query: str, instances: list[str] | None = None, top: int = 10
    ) -> dict[str, Any]:
        """Search indexed folders for the chunks nearest to `query`.

        `instances` limits the search to those instances (default: every instance with a
        vector index); `top` is how many hits to return (1 to 1000). Each hit has
        `instance`, `score` (higher is better unless `higher_is_better` is false),
        `filename`, `start_line`, `end_line` (1-based, inclusive) and `text`.
        """
        args: dict[str, Any] = {"text": query, "top": top}
        if instances:
            args["instance"] = list(instances)
        result: dict[str, Any] = await daemon.call("search", args, SEARCH_TIMEOUT_SECONDS)
        return result

    @server.tool()
    async def list_instances() -> list[dict[str, Any]]:
        """The daemon's flow instances: name, state, live or on-demand, definition."""
        result: list[dict[str, Any]] = await daemon.call("ls", {})
        return result

    @server.tool()
    async def status(name: str | None = None) -> list[dict[str, Any]]:
        """State, row counts, pending changes, progress and last error of one instance
        (or all): whether its index is caught up with its folder."""
        result: list[dict[str, Any]] = await daemon.call(
            "status", {} if name is None else {"name": name}
        )
        return result

    async def update(name: str, full_reprocess: bool = False, ctx: Any = None) -> dict[str, Any]:
        """Run one catch-up pass of instance `name` now and return its statistics. Live
        instances follow their folders by themselves; use this when asked to refresh.
        Progress (files processed of those to process) is reported as it runs."""
        args: dict[str, Any] = {"name": name}
        if full_reprocess:
            args["full_reprocess"] = True

        def on_event(event: dict[str, Any]) -> None:  # in the socket's worker thread
            if ctx is None or "processed" not in event:
                return
            total = event.get("candidates")
            anyio.from_thread.run(
                ctx.report_progress,
                float(event["processed"]),
                None if total is None else float(total),
                describe(event),
            )

        result: dict[str, Any] = await daemon.call("update", args, UPDATE_TIMEOUT_SECONDS, on_event)
        return result

    # The SDK passes the request's Context to a parameter annotated with it; the module
    # cannot name the class at import time (the SDK is optional), so it is set here.
    update.__annotations__["ctx"] = Context
    server.add_tool(update)
    return server


def run_mcp(socket: Path) -> int:
    """Serve MCP on stdin/stdout until the client closes them; 2 without the SDK."""
    try:
        import mcp.server.mcpserver  # noqa: F401  (the SDK, not a cocod module)
    except ImportError:
        print(
            f"cocod: error: `cocod mcp` needs the MCP SDK, an optional extra: {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    build_server(socket).run("stdio")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m cocod.mcp_server [--socket PATH]`` (what ``cocod mcp`` runs)."""
    import argparse

    from cocod.control.client import default_socket_path

    parser = argparse.ArgumentParser(prog="cocod mcp", description=__doc__.split("\n")[0])
    parser.add_argument("--socket", help="control socket (default: $COCOD_SOCKET or the usual)")
    args = parser.parse_args(argv)
    return run_mcp(Path(args.socket) if args.socket else default_socket_path())


if __name__ == "__main__":
    sys.exit(main())
