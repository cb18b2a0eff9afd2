"""Client side of the daemon commands: send one request, render the reply.

Imports only ``json``, ``sys``, ``time`` and :mod:`cocod.control.client` at run
time (no ``pathlib``, no ``typing``, not even the command table until a generated command
needs it), so ``cocod status`` costs little more than starting Python and never loads
asyncpg or torch; tests/cli/test_thin_client.py holds it to that.
"""

from __future__ import annotations

import json
import sys
import time

from cocod.control.client import (
    ControlClient,
    DaemonError,
    DaemonUnavailableError,
    default_socket_location,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def socket_path(args: Any) -> str:
    """``--socket``, else where the daemon listens by default."""
    explicit: str | None = getattr(args, "socket", None)
    return explicit if explicit else default_socket_location()


LONG_COMMANDS = frozenset({"update", "setup", "drop", "verify", "search"})
"""Commands that may take minutes (a first index, a model's first load): no timeout."""


def _call(
    args: Any,
    cmd: str,
    payload: dict[str, Any] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[int, Any]:
    client = ControlClient(socket_path(args), timeout=None if cmd in LONG_COMMANDS else 30)
    is_tty = sys.stderr.isatty() and not args.json and on_event is None
    started = time.monotonic()

    def show_stage(event: dict[str, Any]) -> None:
        if is_tty:
            print(
                f"\r{event.get('stage', 'working')} {event.get('name', '')}…",
                end="",
                file=sys.stderr,
            )

    try:
        result = client.call(cmd, payload or {}, on_event=on_event or show_stage)
    except DaemonUnavailableError as e:
        _say_error(args, "daemon_unavailable", str(e))
        return 3, None
    except DaemonError as e:
        _say_error(args, e.code, e.message)
        return 1, None
    finally:
        if is_tty and time.monotonic() - started > 0.2:
            print("\r", end="", file=sys.stderr)
    if args.json:
        print(json.dumps(result, default=str))
    return 0, result


def _say_error(args: Any, code: str, message: str) -> None:
    """``cocod: <code>: <message>``, one line on stderr (and the reply as JSON with --json)."""
    one_line = " ".join(message.split())
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": {"code": code, "message": one_line}}))
    print(f"cocod: {code}: {one_line}", file=sys.stderr)


def cmd_serve(args: Any) -> int:
    # First of all: until the daemon's signal receiver opens, SIGTERM/SIGHUP are recorded
    # and replayed instead of killing the process mid-import or mid-initdb.
    from cocod.daemon import early_signals

    early_signals.hold()
    import os

    from cocod.daemon.config import find_config_file
    from cocod.daemon.service import run_daemon
    from cocod.logs import configure_logging

    configure_logging(os.environ.get("COCOD_LOG_LEVEL", "info"))
    return run_daemon(find_config_file(args.config))


def cmd_daemon(args: Any) -> int:
    """Any command of the protocol table: its arguments from the parsed command line."""
    from cocod.control.commands import COMMANDS

    command = COMMANDS[args.command]
    if command.runs_in_client:
        return _run_in_client(command.name, args)
    payload: dict[str, Any] = {}
    for arg in command.args:
        value = getattr(args, arg.name, None)
        if value is not None and not (arg.name == "params" and command.name == "add"):
            payload[arg.name] = _split_many(value) if arg.many else value
    if command.name == "add":
        params = _add_params(args)
        if params is None:
            return 2
        if params or "path" not in payload:
            payload["params"] = params
        if "path" in payload:  # like config.toml: relative to where you are
            payload["path"] = _resolved(payload["path"])
    code, result = _call(args, command.name, payload)
    if code == 0 and not args.json:
        _RENDER.get(command.name, _render_default)(result)
    if code == 0 and command.name == "verify":
        after = result.get("after") or result
        code = VERIFY_DRIFT_EXIT if after.get("has_drift") else 0  # scripts can tell
    return code


def _split_many(value: Any) -> list[str]:
    """A repeatable option's values, each of which may list several (``a,b``)."""
    items = value if isinstance(value, list) else [value]
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def _run_in_client(name: str, args: Any) -> int:
    """Commands of the table that this process runs itself (``cocod mcp``)."""
    if name == "mcp":
        from pathlib import Path

        from cocod.mcp_server import run_mcp

        return run_mcp(Path(socket_path(args)))
    raise AssertionError(f"no client-side handler for {name!r}")


VERIFY_DRIFT_EXIT = 4
"""`cocod verify` exits with this when drift remains (found, or left after --repair)."""


def _render_verify(result: Any) -> None:
    print(result["describe"])


def _render_default(result: Any) -> None:
    if isinstance(result, dict) and "state" in result and "name" in result:
        print(f"{result['name']}: {result['state']}")
    else:
        print("ok")


def _render_ping(result: Any) -> None:
    print(f"cocod {result['version']} (pid {result['pid']}) answers")


def _render_reload(result: Any) -> None:
    print("reloaded: " + "; ".join(f"{k} {', '.join(v) or '-'}" for k, v in result.items()))


def _render_remove(result: Any) -> None:
    print(f"{result['name']}: removed{' and dropped' if result['dropped'] else ''}")


def _render_status(result: Any) -> None:
    rows = []
    for r in result:
        targets = r.get("targets") or {}
        state = r["state"] + (" (paused)" if r.get("paused") and r["state"] != "PAUSED" else "")
        owner = r.get("owner")
        if r["state"] == "STANDBY" and owner:
            state += f" (owner {owner.get('host')} pid {owner.get('pid')})"
        rows.append(
            (
                r["name"],
                state,
                "live" if r["live"] else "on-demand",
                _ago(r.get("last_change_at") or r.get("last_update_at")),
                ", ".join(f"{k}={v}" for k, v in targets.items()) or "-",
                str(r.get("pending_changes", "-")),
                r.get("progress_line") or (r.get("last_error") or "")[:60],
            )
        )
    _table(("NAME", "STATE", "MODE", "LAST UPDATE", "ROWS", "PENDING", "PROGRESS/ERROR"), rows)


def _render_search(result: Any) -> None:
    """``1. 0.8123  notes  intro.md:12-18`` then a one-line snippet of the chunk."""
    for rank, hit in enumerate(result["results"], 1):
        where = _printable(str(hit.get("filename") or "?"))
        if hit.get("start_line") is not None:
            where += f":{hit['start_line']}"
            if hit.get("end_line") not in (None, hit["start_line"]):
                where += f"-{hit['end_line']}"
        print(f"{rank}. {hit['score']:.4f}  {hit['instance']}  {where}")
        text = _printable(" ".join(str(hit.get("text") or "").split()))
        if text:
            print(f"   {text[:160]}{'…' if len(text) > 160 else ''}")
    if not result["results"]:
        print("no results" + ("" if result["searched"] else " (no instance could be searched)"))
    for skipped in result.get("skipped", []):
        print(f"(skipped {skipped['name']}: {skipped['reason']})", file=sys.stderr)


def _printable(text: str) -> str:
    """File names and contents are untrusted: no control character (an escape sequence
    in a file must not reach the terminal)."""
    return "".join(c if c.isprintable() else "\ufffd" for c in text)


def _render_pause(result: Any) -> None:
    print(f"{result['name']}: {'paused' if result['paused'] else 'resumed'} ({result['state']})")


def _add_params(args: Any) -> dict[str, Any] | None:
    """``--params-json`` then each ``--param KEY=VALUE``; *path/*dir values resolved here."""
    try:
        params: Any = json.loads(args.params_json) if args.params_json else {}
    except ValueError as e:
        _say_error(args, "bad_args", f"--params-json is not valid JSON: {e}")
        return None
    if not isinstance(params, dict):
        _say_error(args, "bad_args", "--params-json must be a JSON object")
        return None
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            _say_error(args, "bad_args", f"--param {item!r} must be KEY=VALUE")
            return None
        params[key] = value
    for key, value in list(params.items()):
        # Like config.toml: *path / *dir params are paths, relative to where you are.
        if isinstance(value, str) and value and (key.endswith("path") or key.endswith("dir")):
            params[key] = _resolved(value)
    return params


def _resolved(path: str) -> str:
    """An absolute, symlink-free path (``Path.expanduser().resolve()``), as the daemon
    runs elsewhere."""
    from pathlib import Path

    return str(Path(path).expanduser().resolve())


_RENDER = {
    "ping": _render_ping,
    "reload": _render_reload,
    "remove": _render_remove,
    "pause": _render_pause,
    "resume": _render_pause,
    "search": _render_search,
    "status": _render_status,
    "verify": _render_verify,
}


def cmd_ls(args: Any) -> int:
    code, result = _call(args, "ls")
    if code == 0 and not args.json:
        rows = [
            (r["name"], r["state"], "live" if r["live"] else "on-demand", r["origin"])
            for r in result
        ]
        _table(("NAME", "STATE", "MODE", "FROM"), rows)
    return code


def cmd_setup(args: Any) -> int:
    code, result = _call(args, "setup", {"name": args.target})
    if code == 0 and not args.json:
        print(result["report"], end="")
    return code


def cmd_drop(args: Any) -> int:
    code, result = _call(args, "drop", {"name": args.target})
    if code == 0 and not args.json:
        print(result["report"], end="")
    return code


def cmd_update(args: Any) -> int:
    payload: dict[str, Any] = {"name": args.target}
    if args.full_reprocess:
        payload["full_reprocess"] = True
    display = None
    if not args.json and not args.quiet:
        from cocod.cli.progress_display import ProgressDisplay

        display = ProgressDisplay()
    try:
        code, result = _call(
            args, "update", payload, on_event=None if display is None else display.on_event
        )
    finally:
        if display is not None:
            display.close()
    if code == 0 and not args.json and not args.quiet:
        print(result["summary"])
    return code


def cmd_query(args: Any) -> int:
    code, result = _call(args, "query", {"name": args.target, "text": args.text, "top": args.top})
    if code == 0 and not args.json:
        for rank, row in enumerate(result["results"], 1):
            where = ", ".join(
                f"{k}={v}" for k, v in row.items() if k not in ("score", "text") and v is not None
            )
            print(f"{rank}. score={row['score']:.4f}  {where}")
            text = str(row.get("text", "")).strip().replace("\n", " ")
            if text:
                print(f"   {text[:160]}{'…' if len(text) > 160 else ''}")
    return code


def _ago(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    seconds = max(0.0, time.time() - timestamp)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)).rstrip())
