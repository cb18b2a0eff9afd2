"""Wire protocol of the control socket: newline-delimited JSON over a Unix stream socket.

Request:   {"id": 1, "cmd": "status", "args": {"name": "docs"}}
Reply:     {"id": 1, "ok": true, "result": ...}
Error:     {"id": 1, "ok": false, "error": {"code": "unknown_flow", "message": "..."}}
Progress:  {"id": 1, "event": "progress", ...}   (zero or more, before the reply)

Every command is described once, in :data:`COMMANDS` (:mod:`cocod.control.commands`,
re-exported here): its arguments (name, type, required, range), what it does, and its CLI
usage. The daemon validates requests against it (:func:`parse_request`) and the CLI builds
its daemon sub-commands from it (``cocod.cli.parser``), importing only the table.

A request line is untrusted input with bounded cost: at most :data:`MAX_LINE_BYTES`
bytes, :data:`MAX_DEPTH` levels of nesting (checked by a linear byte scan before the JSON
parser recurses), integers of at most :data:`MAX_INT_DIGITS` digits, finite numbers only.
Whatever is wrong with a line becomes a :class:`ProtocolError` for that line.
"""

from __future__ import annotations

import json
import math
from typing import Any

from cocod.control.commands import BUILTIN_FLOWS, COMMANDS, MAX_LIST_ITEMS, Arg, Command
from cocod.errors import ProtocolError

__all__ = [
    "BUILTIN_FLOWS",
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


class Request:
    """One validated request: its id (echoed in the reply), command and arguments."""

    __slots__ = ("args", "command", "id")

    def __init__(self, id: Any, command: Command, args: dict[str, Any]) -> None:
        self.id = id
        self.command = command
        self.args = args

    def __repr__(self) -> str:
        return f"Request({self.id!r}, {self.command.name!r}, {self.args!r})"


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
