"""The control socket's command table: every command, its arguments and its CLI usage.

Described once, here: the daemon validates requests against it
(:func:`cocod.control.protocol.parse_request`) and the CLI builds its daemon sub-commands
from it (``cocod.cli.parser``). The table lives apart from the parser of request lines,
and its records are plain classes rather than dataclasses, because every ``cocod status``
process loads it: ``dataclasses`` pulls in ``inspect`` (``ast``, ``dis``, ``tokenize``),
several milliseconds of start-up that a shell prompt integration would pay on every
prompt. Nothing here imports beyond the builtins.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows it)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["BUILTIN_FLOWS", "COMMANDS", "MAX_LIST_ITEMS", "Arg", "Command"]

MAX_LIST_ITEMS = 1000
"""A ``many`` argument's list holds at most this many values."""


class Arg:
    """One argument of a command: its JSON type and, for integers, its allowed range.

    Immutable by convention (the table is shared by every request).
    """

    __slots__ = (
        "choices",
        "default",
        "help",
        "many",
        "max",
        "min",
        "name",
        "positional",
        "required",
        "type",
    )

    def __init__(
        self,
        name: str,
        type: type | tuple[type, ...],
        required: bool = False,
        help: str = "",
        positional: bool = False,
        min: int | None = None,
        max: int | None = None,
        default: Any = None,
        many: bool = False,
        choices: tuple[str, ...] | None = None,
    ) -> None:
        self.name = name
        self.type = type
        self.required = required
        self.help = help
        self.positional = positional
        self.min = min
        self.max = max
        self.default = default
        """What the daemon uses when the argument is absent (shown in the CLI help)."""
        self.many = many
        """A value of ``type`` or a list of up to :data:`MAX_LIST_ITEMS` of them on the
        wire; on the command line the option is repeatable (``--instance a --instance b``)
        and a value may also list several, comma-separated (``--instance a,b``)."""
        self.choices = choices
        """The only values a string argument may take (``add --flow code|text``)."""

    def __repr__(self) -> str:
        return f"Arg({self.name!r}, {self.type!r}, required={self.required})"


class Command:
    """One command: its name, help, arguments, and how it runs."""

    __slots__ = ("args", "help", "is_long", "name", "runs_in_client")

    def __init__(
        self,
        name: str,
        help: str,
        args: tuple[Arg, ...] = (),
        is_long: bool = False,
        runs_in_client: bool = False,
    ) -> None:
        self.name = name
        self.help = help
        self.args = args
        self.is_long = is_long
        """May stream progress events before its reply."""
        self.runs_in_client = runs_in_client
        """A command of the ``cocod`` program that is not sent over the socket (``cocod
        mcp`` runs a server that is itself a client); listed here so its usage is generated
        like every other, and refused by ``parse_request`` as unknown."""

    def __repr__(self) -> str:
        return f"Command({self.name!r})"


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
                Arg(
                    "wait",
                    bool,
                    help="with --repair, wait while another process writes the flow; "
                    "--no-wait fails at once, naming it",
                    default=True,
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
