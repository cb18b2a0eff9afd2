"""Wire protocol of the control socket: newline-delimited JSON over a Unix stream socket.

Request:   {"id": 1, "cmd": "status", "args": {"name": "docs"}}
Reply:     {"id": 1, "ok": true, "result": ...}
Error:     {"id": 1, "ok": false, "error": {"code": "unknown_flow", "message": "..."}}
Progress:  {"id": 1, "event": "progress", ...}   (zero or more, before the reply)

Every command is described once, in :data:`COMMANDS`: its arguments (name, type,
required), what it does, and its CLI usage. The daemon validates requests against it and
the CLI builds its sub-commands from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_LINE_BYTES = 1 << 20
"""A request line longer than this is refused and the connection closed."""


class ErrorCode:
    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_COMMAND = "unknown_command"
    BAD_ARGS = "bad_args"
    TOO_LARGE = "too_large"
    UNKNOWN_FLOW = "unknown_flow"
    FLOW_EXISTS = "flow_exists"
    FLOW_FAILED = "flow_failed"
    SETUP_REQUIRED = "setup_required"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A request the daemon refuses; ``code`` is one of :class:`ErrorCode`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Arg:
    name: str
    type: type | tuple[type, ...]
    required: bool = False
    help: str = ""
    positional: bool = False


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    args: tuple[Arg, ...] = field(default_factory=tuple)
    is_long: bool = False  # may stream progress events before its reply


_NAME = Arg("name", str, required=True, help="flow instance name", positional=True)
_OPT_NAME = Arg("name", str, help="flow instance name (default: all)", positional=True)

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("ping", "check that the daemon answers"),
        Command("ls", "list flow instances with their state"),
        Command("status", "state, counts, last update and errors of instances", (_OPT_NAME,)),
        Command("open", "open an instance (live ones start watching)", (_NAME,)),
        Command("close", "close an instance in this daemon (its data stays)", (_NAME,)),
        Command("setup", "create or update an instance's tables", (_NAME,), is_long=True),
        Command("drop", "drop an instance's tables and state", (_NAME,), is_long=True),
        Command(
            "update",
            "run one catch-up update",
            (_NAME, Arg("full_reprocess", bool, help="recompute every row")),
            is_long=True,
        ),
        Command(
            "query",
            "nearest rows to a text by the instance's vector index",
            (
                _NAME,
                Arg("text", str, required=True, help="query text", positional=True),
                Arg("top", int, help="number of results (default 5)"),
            ),
        ),
        Command(
            "add",
            "add an instance at runtime (kept across restarts)",
            (
                _NAME,
                Arg("definition", str, required=True, help="module:factory", positional=True),
                Arg("params", dict, help="factory parameters (JSON object)"),
                Arg("live", bool, help="supervise a live updater (default true)"),
            ),
        ),
        Command(
            "remove",
            "remove an instance added at runtime",
            (_NAME, Arg("drop", bool, help="also drop its tables and state")),
        ),
        Command("reload", "re-read config.toml and apply the difference"),
        Command("shutdown", "drain and stop the daemon"),
    )
}


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def request_id_of(line: bytes) -> Any:
    """The id of a request, if it can be read at all (so even refusals carry it)."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return message.get("id") if isinstance(message, dict) else None


def parse_request(line: bytes) -> tuple[Any, Command, dict[str, Any]]:
    """Validate one request line; raises ProtocolError with the request id when known."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(ErrorCode.BAD_JSON, f"request is not valid JSON: {e}") from None
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "request must be a JSON object")
    name = message.get("cmd")
    if not isinstance(name, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "request needs a string 'cmd'")
    command = COMMANDS.get(name)
    if command is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_COMMAND,
            f"unknown command {name!r}; known: {', '.join(sorted(COMMANDS))}",
        )
    args = message.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError(ErrorCode.BAD_ARGS, "'args' must be a JSON object")
    known = {a.name: a for a in command.args}
    for key, value in args.items():
        spec = known.get(key)
        if spec is None:
            raise ProtocolError(ErrorCode.BAD_ARGS, f"{name}: unknown argument {key!r}")
        if not isinstance(value, spec.type) or (spec.type is int and isinstance(value, bool)):
            raise ProtocolError(
                ErrorCode.BAD_ARGS,
                f"{name}: argument {key!r} must be {_type_name(spec.type)}, "
                f"got {type(value).__name__}",
            )
    for spec in command.args:
        if spec.required and spec.name not in args:
            raise ProtocolError(ErrorCode.BAD_ARGS, f"{name}: missing argument {spec.name!r}")
    return message.get("id"), command, args


def _type_name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    return {"str": "a string", "int": "an integer", "bool": "a boolean", "dict": "an object"}.get(
        t.__name__, t.__name__
    )
