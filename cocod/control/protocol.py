"""Wire protocol of the control socket: newline-delimited JSON over a Unix stream socket.

Request:   {"id": 1, "cmd": "status", "args": {"name": "docs"}}
Reply:     {"id": 1, "ok": true, "result": ...}
Error:     {"id": 1, "ok": false, "error": {"code": "unknown_flow", "message": "..."}}
Progress:  {"id": 1, "event": "progress", ...}   (zero or more, before the reply)

Every command is described once, in :data:`COMMANDS`: its arguments (name, type,
required, range), what it does, and its CLI usage. The daemon validates requests against
it (:func:`parse_request`) and the CLI builds its daemon sub-commands from it
(``cocod.cli.parser``).

A request line is untrusted input with bounded cost: at most :data:`MAX_LINE_BYTES`
bytes, :data:`MAX_DEPTH` levels of nesting (checked by a linear byte scan before the JSON
parser recurses), integers of at most :data:`MAX_INT_DIGITS` digits, finite numbers only.
Whatever is wrong with a line becomes a :class:`ProtocolError` for that line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from cocod.errors import ProtocolError

__all__ = [
    "COMMANDS",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_LINE_BYTES",
    "MAX_LIST_ITEMS",
    "Arg",
    "Command",
    "ErrorCode",
    "ProtocolError",
    "Request",
    "encode",
    "nesting_depth",
    "parse_request",
]

MAX_LINE_BYTES = 1 << 20
"""A request line longer than this is refused and the connection closed."""

MAX_DEPTH = 64
"""Deeper arrays/objects are refused before parsing (the parser recurses per level)."""

MAX_INT_DIGITS = 64
"""Longer integer literals are refused (int() of a huge literal is quadratic, then fails)."""

MAX_LIST_ITEMS = 1000
"""A ``many`` argument's list holds at most this many values."""


class ErrorCode:
    """The ``error.code`` values a reply can carry (docs/daemon.md lists when each is sent)."""

    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_COMMAND = "unknown_command"
    BAD_ARGS = "bad_args"
    TOO_LARGE = "too_large"
    UNKNOWN_FLOW = "unknown_flow"
    FLOW_EXISTS = "flow_exists"
    FLOW_FAILED = "flow_failed"
    SETUP_REQUIRED = "setup_required"
    DATABASE_UNAVAILABLE = "database_unavailable"
    DATABASE_ERROR = "database_error"
    BAD_CONFIG = "bad_config"
    SHUTTING_DOWN = "shutting_down"
    NOT_OWNER = "not_owner"
    INTERNAL = "internal"


@dataclass(frozen=True)
class Arg:
    """One argument of a command: its JSON type and, for integers, its allowed range."""

    name: str
    type: type | tuple[type, ...]
    required: bool = False
    help: str = ""
    positional: bool = False
    min: int | None = None
    max: int | None = None
    default: Any = None
    """What the daemon uses when the argument is absent (shown in the CLI help)."""
    many: bool = False
    """A value of ``type`` or a list of up to :data:`MAX_LIST_ITEMS` of them on the wire; on
    the command line the option is repeatable (``--instance a --instance b``) and a value
    may also list several, comma-separated (``--instance a,b``)."""
    choices: tuple[str, ...] | None = None
    """The only values a string argument may take (``add --flow code|text``)."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    args: tuple[Arg, ...] = field(default_factory=tuple)
    is_long: bool = False  # may stream progress events before its reply
    runs_in_client: bool = False
    """A command of the ``cocod`` program that is not sent over the socket (``cocod mcp``
    runs a server that is itself a client); listed here so its usage is generated like
    every other, and refused by :func:`parse_request` as unknown."""


@dataclass(frozen=True)
class Request:
    id: Any
    command: Command
    args: dict[str, Any]


BUILTIN_FLOWS = ("code", "text")
"""The flows of :mod:`cocod.flows` that ``add --path`` can name."""

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
            (_NAME, Arg("full_reprocess", bool, help="recompute every row", default=False)),
            is_long=True,
        ),
        Command(
            "verify",
            "compare an instance's tracking, tables and files; --repair fixes the drift",
            (
                _NAME,
                Arg(
                    "repair",
                    bool,
                    help="reprocess what drifted so the tables equal a fresh build",
                    default=False,
                ),
            ),
            is_long=True,
        ),
        Command(
            "query",
            "nearest rows to a text by the instance's vector index",
            (
                _NAME,
                Arg("text", str, required=True, help="query text", positional=True),
                Arg("top", int, help="number of results", min=1, max=1000, default=5),
            ),
        ),
        Command(
            "search",
            "nearest chunks to a text across instances, merged by score, with line ranges",
            (
                Arg("text", str, required=True, help="query text", positional=True),
                Arg(
                    "instance",
                    str,
                    help="instance to search; a,b for several (default: every instance "
                    "with a vector index)",
                    many=True,
                ),
                Arg("top", int, help="number of results", min=1, max=1000, default=10),
            ),
        ),
        Command(
            "add",
            "add an instance at runtime (kept across restarts)",
            (
                _NAME,
                Arg(
                    "definition",
                    str,
                    help="module:factory (optional with --path: a built-in flow)",
                    positional=True,
                ),
                Arg("params", dict, help="factory parameters (JSON object)"),
                Arg("live", bool, help="supervise a live updater", default=True),
                Arg("path", str, help="folder to index with a built-in flow (cocod.flows)"),
                Arg(
                    "flow",
                    str,
                    help="built-in flow for --path: code or text",
                    default="text",
                    choices=BUILTIN_FLOWS,
                ),
            ),
        ),
        Command(
            "remove",
            "remove an instance added at runtime",
            (_NAME, Arg("drop", bool, help="also drop its tables and state", default=False)),
        ),
        Command(
            "pause", "stop updating an instance (kept across restarts; changes are kept)", (_NAME,)
        ),
        Command("resume", "resume a paused instance; it catches up on what changed", (_NAME,)),
        Command("reload", "re-read config.toml and apply the difference"),
        Command("shutdown", "drain and stop the daemon"),
        Command(
            "mcp",
            "serve the MCP tools (search, list_instances, status, update) on stdin/stdout; "
            "needs pip install 'cocod[mcp]'",
            runs_in_client=True,
        ),
    )
}


def encode(message: dict[str, Any]) -> bytes:
    """One reply line. Raises ValueError for a non-finite float (never valid JSON)."""
    return json.dumps(message, separators=(",", ":"), default=str, allow_nan=False).encode() + b"\n"


# -- parsing ---------------------------------------------------------------------------------

_BRACKET_DELTA = [0] * 256
_BRACKET_DELTA[ord("[")] = _BRACKET_DELTA[ord("{")] = 1
_BRACKET_DELTA[ord("]")] = _BRACKET_DELTA[ord("}")] = -1
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_depth(line: bytes, limit: int = MAX_DEPTH) -> int:
    """How deep arrays and objects nest in ``line``, ignoring brackets inside strings.

    Linear and done in C-speed byte operations, so it is safe on a 1 MiB hostile line:
    escapes are removed first (``\\\\`` then ``\\"``), after which every ``"`` delimits a
    string, and only the text between strings is counted. Malformed input may be counted
    oddly, but then the JSON parser refuses it anyway. Stops counting past ``limit``.
    """
    if line.count(b"[") + line.count(b"{") <= limit:
        return line.count(b"[") + line.count(b"{")  # an upper bound, and within the limit
    unescaped = line.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    brackets = outside.translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for delta in map(_BRACKET_DELTA.__getitem__, brackets):
        depth += delta
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def _parse_int(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ProtocolError(
            ErrorCode.BAD_JSON,
            f"request has an integer of {digits} digits; at most {MAX_INT_DIGITS} are accepted",
        )
    return int(literal)


def _parse_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ProtocolError(
            ErrorCode.BAD_JSON, f"request has a number out of range: {literal[:40]}"
        )
    return value


def _parse_constant(name: str) -> Any:
    raise ProtocolError(ErrorCode.BAD_JSON, f"request has {name}, which is not valid JSON")


_DECODER = json.JSONDecoder(
    parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant
)


def decode_line(line: bytes) -> Any:
    """Strict UTF-8 JSON with bounded depth and number sizes, or a ``bad_json`` error."""
    depth = nesting_depth(line)
    if depth > MAX_DEPTH:
        raise ProtocolError(
            ErrorCode.BAD_JSON, f"request nests deeper than {MAX_DEPTH} levels; refused"
        )
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(
            ErrorCode.BAD_JSON, f"request is not valid UTF-8 (byte {e.start})"
        ) from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise ProtocolError(ErrorCode.BAD_JSON, f"request is not valid JSON: {e}") from None
    except RecursionError:  # unreachable after the depth check; kept as a last line
        raise ProtocolError(ErrorCode.BAD_JSON, "request nests too deeply; refused") from None


def parse_request(line: bytes) -> Request:
    """Validate one request line against :data:`COMMANDS`.

    Raises :class:`ProtocolError` (with ``request_id`` set whenever the id could be read)
    for every way a line can be wrong; never anything else.
    """
    message = decode_line(line)
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "request must be a JSON object")
    request_id = message.get("id")
    try:
        command, args = _validate(message)
    except ProtocolError as e:
        e.request_id = request_id
        raise
    return Request(request_id, command, args)


def _validate(message: dict[str, Any]) -> tuple[Command, dict[str, Any]]:
    name = message.get("cmd")
    if not isinstance(name, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "request needs a string 'cmd'")
    command = COMMANDS.get(name)
    if command is None or command.runs_in_client:
        served = sorted(c.name for c in COMMANDS.values() if not c.runs_in_client)
        raise ProtocolError(
            ErrorCode.UNKNOWN_COMMAND,
            f"unknown command {name[:80]!r}; known: {', '.join(served)}",
        )
    args = message.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ProtocolError(
            ErrorCode.BAD_ARGS, f"'args' must be a JSON object, got {_json_type(args)}"
        )
    known = {a.name: a for a in command.args}
    for key, value in args.items():
        spec = known.get(key)
        if spec is None:
            raise ProtocolError(
                ErrorCode.BAD_ARGS,
                f"{name}: unknown argument {key[:80]!r} (known: {', '.join(known) or 'none'})",
            )
        check_arg(command, spec, value)
    for spec in command.args:
        if spec.required and spec.name not in args:
            raise ProtocolError(ErrorCode.BAD_ARGS, f"{name}: missing argument {spec.name!r}")
    return command, args


def check_arg(command: Command, spec: Arg, value: Any) -> None:
    """Type and range of one argument value, as the table says; ``bad_args`` otherwise."""
    if spec.many and isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            raise ProtocolError(
                ErrorCode.BAD_ARGS,
                f"{command.name}: argument {spec.name!r} lists {len(value)} values; "
                f"at most {MAX_LIST_ITEMS} are accepted",
            )
        for item in value:
            _check_one(command, spec, item)
        return
    _check_one(command, spec, value)


def _check_one(command: Command, spec: Arg, value: Any) -> None:
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    is_bool_for_int = isinstance(value, bool) and bool not in types
    if not isinstance(value, types) or is_bool_for_int:
        raise ProtocolError(
            ErrorCode.BAD_ARGS,
            f"{command.name}: argument {spec.name!r} must be {_type_name(spec.type)}"
            f"{' or a list of them' if spec.many else ''}, got {_json_type(value)}",
        )
    if isinstance(value, int) and not isinstance(value, bool):
        too_small = spec.min is not None and value < spec.min
        too_large = spec.max is not None and value > spec.max
        if too_small or too_large:
            raise ProtocolError(
                ErrorCode.BAD_ARGS,
                f"{command.name}: argument {spec.name!r} must be between "
                f"{spec.min} and {spec.max}, got {value}",
            )
    if spec.choices is not None and value not in spec.choices:
        raise ProtocolError(
            ErrorCode.BAD_ARGS,
            f"{command.name}: argument {spec.name!r} must be one of "
            f"{', '.join(spec.choices)}, got {str(value)[:80]!r}",
        )


def _type_name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return {"str": "a string", "int": "an integer", "bool": "a boolean", "dict": "an object"}.get(
        t.__name__, t.__name__
    )


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value, for messages ("got an array")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
