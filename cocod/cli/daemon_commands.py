"""Client side of the daemon commands: send one request, render the reply.

Imports only the stdlib and :mod:`cocod.control`, so ``cocod status`` starts in tens of
milliseconds and never loads asyncpg or torch.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from cocod.control.client import (
    ControlClient,
    DaemonError,
    DaemonUnavailableError,
    default_socket_path,
)


def socket_path(args: Any) -> Path:
    explicit = getattr(args, "socket", None)
    return Path(explicit) if explicit else default_socket_path()


def _call(args: Any, cmd: str, payload: dict[str, Any] | None = None) -> tuple[int, Any]:
    client = ControlClient(
        socket_path(args), timeout=None if cmd in ("update", "setup", "drop") else 30
    )
    is_tty = sys.stderr.isatty() and not args.json
    started = time.monotonic()

    def on_event(event: dict[str, Any]) -> None:
        if is_tty:
            print(
                f"\r{event.get('stage', 'working')} {event.get('name', '')}…",
                end="",
                file=sys.stderr,
            )

    try:
        result = client.call(cmd, payload or {}, on_event=on_event)
    except DaemonUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3, None
    except DaemonError as e:
        if args.json:
            print(json.dumps({"ok": False, "error": {"code": e.code, "message": str(e)}}))
        else:
            print(f"error ({e.code}): {e}", file=sys.stderr)
        return 1, None
    finally:
        if is_tty and time.monotonic() - started > 0.2:
            print("\r", end="", file=sys.stderr)
    if args.json:
        print(json.dumps(result, default=str))
    return 0, result


def cmd_serve(args: Any) -> int:
    import os

    from cocod.daemon.config import find_config_file
    from cocod.daemon.service import run_daemon
    from cocod.logs import configure_logging

    configure_logging(os.environ.get("COCOD_LOG_LEVEL", "info"))
    return run_daemon(find_config_file(args.config))


def cmd_simple(args: Any) -> int:
    payload = {"name": args.name} if getattr(args, "name", None) else {}
    code, result = _call(args, args.command, payload)
    if code == 0 and not args.json:
        if args.command == "ping":
            print(f"cocod {result['version']} (pid {result['pid']}) answers")
        elif args.command == "reload":
            print("reloaded: " + "; ".join(f"{k} {', '.join(v) or '-'}" for k, v in result.items()))
        elif isinstance(result, dict) and "state" in result:
            print(f"{result['name']}: {result['state']}")
        else:
            print("ok")
    return code


def cmd_ls(args: Any) -> int:
    code, result = _call(args, "ls")
    if code == 0 and not args.json:
        rows = [
            (r["name"], r["state"], "live" if r["live"] else "on-demand", r["origin"])
            for r in result
        ]
        _table(("NAME", "STATE", "MODE", "FROM"), rows)
    return code


def cmd_status(args: Any) -> int:
    code, result = _call(args, "status", {"name": args.name} if args.name else {})
    if code == 0 and not args.json:
        rows = []
        for r in result:
            targets = r.get("targets") or {}
            rows.append(
                (
                    r["name"],
                    r["state"],
                    "live" if r["live"] else "on-demand",
                    _ago(r.get("last_change_at") or r.get("last_update_at")),
                    ", ".join(f"{k}={v}" for k, v in targets.items()) or "-",
                    str(r.get("pending_changes", "-")),
                    (r.get("last_error") or "")[:60],
                )
            )
        _table(("NAME", "STATE", "MODE", "LAST UPDATE", "ROWS", "PENDING", "LAST ERROR"), rows)
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
    code, result = _call(args, "update", payload)
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


def cmd_add(args: Any) -> int:
    params: dict[str, Any] = json.loads(args.params_json) if args.params_json else {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --param {item!r} must be KEY=VALUE", file=sys.stderr)
            return 2
        params[key] = value
    for key, value in list(params.items()):
        # Like config.toml: *path / *dir params are paths, relative to where you are.
        if isinstance(value, str) and value and (key.endswith("path") or key.endswith("dir")):
            params[key] = str(Path(value).expanduser().resolve())
    payload = {
        "name": args.name,
        "definition": args.definition,
        "params": params,
        "live": not args.on_demand,
    }
    code, result = _call(args, "add", payload)
    if code == 0 and not args.json:
        print(f"{result['name']}: {result['state']}")
    return code


def cmd_remove(args: Any) -> int:
    code, result = _call(args, "remove", {"name": args.name, "drop": args.drop})
    if code == 0 and not args.json:
        print(f"{result['name']}: removed{' and dropped' if result['dropped'] else ''}")
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
