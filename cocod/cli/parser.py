"""The ``cocod`` command line, defined without heavy imports (handlers load lazily).

Commands that exist both for apps (v0's CLI) and for the daemon decide by their target:
a path (``flows.py``, ``./main``) or a dotted module or ``app.py:Flow`` is an app target
handled in-process; a bare name (``docs``) is a daemon flow instance.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cocod.cli.fast_args import APP, DAEMON
from cocod.control.commands import COMMANDS, Arg, Command

APP_COMMANDS = frozenset({"setup", "drop", "update", "ls", "query", "show", "evaluate"})
"""Sub-commands in v0's shape (``APP_TARGET`` first, v0's flags); they go to the daemon
when the target is an instance name. Every other daemon command is generated from
:data:`~cocod.control.protocol.COMMANDS`."""

CLI_ONLY_OPTIONS: dict[tuple[str, str], tuple[tuple[str, dict[str, Any]], ...]] = {
    # A JSON object is awkward to type: `add` takes KEY=VALUE pairs or one JSON text.
    ("add", "params"): (
        (
            "--param",
            {
                "action": "append",
                "default": [],
                "metavar": "KEY=VALUE",
                "help": "one factory parameter (repeatable)",
            },
        ),
        ("--params-json", {"metavar": "JSON", "help": "all factory parameters as a JSON object"}),
    ),
    # v0-era spelling of `--no-live`, kept for scripts.
    ("add", "live"): (
        (
            "--on-demand",
            {
                "dest": "live",
                "action": "store_false",
                "help": "not live: opened by commands (same as --no-live)",
            },
        ),
    ),
}
"""Table arguments whose command-line form is not the generic one (added besides it)."""


def _add_instance_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--instance",
        action="store_true",
        help="the target is a daemon instance, even if an app of that name is here",
    )


def _daemon_options() -> argparse.ArgumentParser:
    parent = Parser(add_help=False)
    parent.add_argument("--socket", help="control socket (default: $COCOD_SOCKET or the usual)")
    parent.add_argument("--json", action="store_true", help="machine-readable output")
    return parent


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``only`` (a command word, see :func:`command_word`)
    just that sub-command: building all of them costs more than the imports of a thin
    client, and argparse reads nothing but the chosen one. An unknown ``only`` builds
    everything (the error then lists every choice)."""
    parser = Parser(
        prog="cocod",
        description="Keep Postgres + pgvector indexes in sync with folders of documents.",
    )
    parser.add_argument("-V", "--version", action="store_true", help="print the version")
    parser.add_argument("-e", "--env-file", help="load environment variables from this file")
    parser.add_argument("-d", "--app-dir", help="prepend this folder to the import path")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    daemon = _daemon_options()
    names = [*_APP_SHAPED, *(c for c in COMMANDS if c not in APP_COMMANDS)]
    if only in names:
        names = [only]
    for name in names:
        add = _APP_SHAPED.get(name)
        if add is not None:
            add(sub, daemon)
        else:
            _add_daemon_command(sub, COMMANDS[name], daemon)
    return parser


HELP_FLAGS = ("-h", "--help")
VERSION_FLAGS = ("-V", "--version")
GLOBAL_OPTIONS = ("-e", "--env-file", "-d", "--app-dir")
"""The top-level options that take a value (the flags above take none)."""


def command_word(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names, read as argparse reads the top level (flags,
    options with their value in any spelling argparse accepts, abbreviations), or None
    when in doubt; then :func:`build_parser` builds everything and argparse decides."""
    tokens = iter(argv)
    for token in tokens:
        if not token.startswith("-"):
            return token
        if token == "--":
            return None
        name, has_value, _ = token.partition("=")
        if _matches(name, GLOBAL_OPTIONS):
            if not has_value:
                next(tokens, None)  # the option's value
            continue
        if token.startswith(("-e", "-d")) and not token.startswith("--"):
            continue  # -eFILE
        if not has_value and _matches(token, VERSION_FLAGS):
            continue
        return None  # --help lists every command; anything odd: let argparse say
    return None


def _long(spellings: tuple[str, ...]) -> list[str]:
    return [s for s in spellings if s.startswith("--")]


def _matches(token: str, spellings: tuple[str, ...]) -> bool:
    """``token`` is one of ``spellings`` or an abbreviation of exactly one long one."""
    if token in spellings:
        return True
    if not token.startswith("--") or len(token) < 3:
        return False
    every_long = _long(HELP_FLAGS + VERSION_FLAGS + GLOBAL_OPTIONS)
    hits = [s for s in every_long if s.startswith(token)]
    return len(hits) == 1 and hits[0] in spellings


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, minus its ``import shutil`` (and shutil's bz2, lzma, zlib):
    argparse makes a formatter for every ``add_argument`` only to check the metavar, and
    the terminal width it computes is needed only when help is printed."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _terminal_columns() - 2  # what argparse does, via os instead of shutil
        super().__init__(prog, indent_increment, max_help_position, width)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help formatter is :class:`HelpFormatter`; its sub-command
    parsers are of this class too (argparse makes them with ``type(parser)``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def _terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``: $COLUMNS, the terminal's width, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _add_serve(sub: Any, daemon: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", help="run the daemon in the foreground")
    p.add_argument("--config", help="config.toml (default: $COCOD_CONFIG, ./config.toml, ...)")
    p.set_defaults(handler=DAEMON + "cmd_serve")


# -- commands for apps and instances ---------------------------------------------------------
def _add_setup(sub: Any, daemon: argparse.ArgumentParser) -> None:
    p = sub.add_parser("setup", parents=[daemon], help="create or update tables of flows")
    p.add_argument("target", metavar="APP_TARGET|INSTANCE")
    p.add_argument("-f", "--force", action="store_true", help="apply without asking")
    p.add_argument("--reset", action="store_true", help="drop the flows first")
    _add_no_wait_flag(p)
    _add_instance_flag(p)
    p.set_defaults(handler=APP + "cmd_setup", daemon_handler=DAEMON + "cmd_setup")


def _add_drop(sub: Any, daemon: argparse.ArgumentParser) -> None:
    p = sub.add_parser("drop", parents=[daemon], help="drop the tables and state of flows")
    p.add_argument("target", metavar="APP_TARGET|INSTANCE")
    p.add_argument("flow_names", nargs="*")
    p.add_argument("-f", "--force", action="store_true")
    _add_no_wait_flag(p)
    _add_instance_flag(p)
    p.set_defaults(handler=APP + "cmd_drop", daemon_handler=DAEMON + "cmd_drop")


def _add_update(sub: Any, daemon: argparse.ArgumentParser) -> None:
    p = sub.add_parser("update", parents=[daemon], help="set up if needed, then catch up")
    p.add_argument("target", metavar="APP_FLOW_SPECIFIER|INSTANCE")
    p.add_argument("-L", "--live", action="store_true", help="keep following file changes")
    p.add_argument("--reexport", action="store_true", help="write every target row again")
    p.add_argument("--full-reprocess", action="store_true", help="recompute every row")
    p.add_argument("--setup", action="store_true", help="(default; kept for v0 compatibility)")
    p.add_argument("--reset", action="store_true", help="drop the flows first")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    _add_no_wait_flag(p)
    _add_instance_flag(p)
    p.set_defaults(handler=APP + "cmd_update", daemon_handler=DAEMON + "cmd_update")


def _add_ls(sub: Any, daemon: argparse.ArgumentParser) -> None:
    p = sub.add_parser("ls", parents=[daemon], help="list flow instances, or an app's flows")
    p.add_argument("target", nargs="?", metavar="APP_TARGET")
    _add_instance_flag(p)
    p.set_defaults(handler=APP + "cmd_ls", daemon_handler=DAEMON + "cmd_ls")


def _add_query(sub: Any, daemon: argparse.ArgumentParser) -> None:
    p = sub.add_parser("query", parents=[daemon], help="nearest rows to a text")
    p.add_argument("target", metavar="APP_FLOW_SPECIFIER|INSTANCE")
    p.add_argument("text")
    p.add_argument("--top", type=int, default=5, help=_help(_table_arg("query", "top")))
    p.add_argument("--export", help="which export to query (apps only)")
    _add_instance_flag(p)
    p.set_defaults(handler=APP + "cmd_query", daemon_handler=DAEMON + "cmd_query")


def _add_show(sub: Any, daemon: argparse.ArgumentParser) -> None:
    p = sub.add_parser("show", help="print a flow's structure")
    p.add_argument("target", metavar="APP_FLOW_SPECIFIER")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--color", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(handler=APP + "cmd_show")


def _add_evaluate(sub: Any, daemon: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "evaluate", help="run a flow without writing targets; dump its rows as YAML files"
    )
    p.add_argument("target", metavar="APP_FLOW_SPECIFIER")
    p.add_argument(
        "-o",
        "--output-dir",
        help="folder for the files (default: eval_[NAMESPACE_]FLOW_YYMMDD_HHMMSS, as v0)",
    )
    p.add_argument(
        "--cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reuse memoized function results (--no-cache recomputes them)",
    )
    p.set_defaults(handler=APP + "cmd_evaluate")


_APP_SHAPED: dict[str, Callable[[Any, argparse.ArgumentParser], None]] = {
    "serve": _add_serve,
    "setup": _add_setup,
    "drop": _add_drop,
    "update": _add_update,
    "ls": _add_ls,
    "query": _add_query,
    "show": _add_show,
    "evaluate": _add_evaluate,
}
"""The hand-written sub-commands, in help order; the table's others follow them."""


def _add_no_wait_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="fail at once, naming the holder, when another process writes the flow "
        "(default: wait; COCOD_LEASE_WAIT_SECONDS bounds the wait)",
    )


def _add_daemon_command(
    sub: Any, command: Command, parents: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """One sub-command whose arguments, types and help come from the command table."""
    p: argparse.ArgumentParser = sub.add_parser(
        command.name, parents=[parents], help=command.help, description=command.help
    )
    for arg in command.args:
        if arg.positional:
            p.add_argument(
                arg.name,
                nargs=None if arg.required else "?",
                metavar=arg.name.upper(),
                help=arg.help,
            )
            continue
        flag = "--" + arg.name.replace("_", "-")
        extras = CLI_ONLY_OPTIONS.get((command.name, arg.name))
        if arg.type is bool:
            p.add_argument(
                flag,
                dest=arg.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=_help(arg),
            )
        elif arg.type is int:
            p.add_argument(flag, dest=arg.name, type=int, metavar="N", help=_help(arg))
        elif arg.type is str:
            p.add_argument(
                flag,
                dest=arg.name,
                action="append" if arg.many else "store",
                metavar=arg.name.upper(),
                help=_help(arg),
            )
        elif extras is None:
            raise TypeError(f"{command.name}: no command-line form for argument {arg.name!r}")
        for option, kwargs in extras or ():
            p.add_argument(option, **kwargs)
    p.set_defaults(handler=DAEMON + "cmd_daemon")
    return p


def _table_arg(command: str, name: str) -> Arg:
    return next(a for a in COMMANDS[command].args if a.name == name)


def _help(arg: Arg) -> str:
    parts = [arg.help] if arg.help else []
    if arg.min is not None or arg.max is not None:
        parts.append(f"{arg.min if arg.min is not None else '…'}..{arg.max or '…'}")
    if arg.default is not None:
        default = str(arg.default).lower() if isinstance(arg.default, bool) else arg.default
        parts.append(f"default {default}")
    return "; ".join(parts)
