"""The ``cocod`` command line, defined without heavy imports (handlers load lazily).

Commands that exist both for apps (v0's CLI) and for the daemon decide by their target:
a path (``flows.py``, ``./main``) or a dotted module or ``app.py:Flow`` is an app target
handled in-process; a bare name (``docs``) is a daemon flow instance.
"""

from __future__ import annotations

import argparse
from typing import Any

from cocod.control.protocol import COMMANDS, Arg, Command

APP = "cocod.cli.app_commands:"
DAEMON = "cocod.cli.daemon_commands:"

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


def looks_like_app_target(target: str | None) -> bool:
    if not target:
        return False
    return "/" in target or target.endswith(".py") or ":" in target or "." in target


def _add_instance_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--instance",
        action="store_true",
        help="the target is a daemon instance, even if an app of that name is here",
    )


def _daemon_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--socket", help="control socket (default: $COCOD_SOCKET or the usual)")
    parent.add_argument("--json", action="store_true", help="machine-readable output")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cocod",
        description="Keep Postgres + pgvector indexes in sync with folders of documents.",
    )
    parser.add_argument("-V", "--version", action="store_true", help="print the version")
    parser.add_argument("-e", "--env-file", help="load environment variables from this file")
    parser.add_argument("-d", "--app-dir", help="prepend this folder to the import path")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    daemon = _daemon_options()

    p = sub.add_parser("serve", help="run the daemon in the foreground")
    p.add_argument("--config", help="config.toml (default: $COCOD_CONFIG, ./config.toml, ...)")
    p.set_defaults(handler=DAEMON + "cmd_serve")

    # -- commands for apps and instances -----------------------------------------------------
    p = sub.add_parser("setup", parents=[daemon], help="create or update tables of flows")
    p.add_argument("target", metavar="APP_TARGET|INSTANCE")
    p.add_argument("-f", "--force", action="store_true", help="apply without asking")
    p.add_argument("--reset", action="store_true", help="drop the flows first")
    _add_no_wait_flag(p)
    _add_instance_flag(p)
    p.set_defaults(handler=APP + "cmd_setup", daemon_handler=DAEMON + "cmd_setup")

    p = sub.add_parser("drop", parents=[daemon], help="drop the tables and state of flows")
    p.add_argument("target", metavar="APP_TARGET|INSTANCE")
    p.add_argument("flow_names", nargs="*")
    p.add_argument("-f", "--force", action="store_true")
    _add_no_wait_flag(p)
    _add_instance_flag(p)
    p.set_defaults(handler=APP + "cmd_drop", daemon_handler=DAEMON + "cmd_drop")

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

    p = sub.add_parser("ls", parents=[daemon], help="list flow instances, or an app's flows")
    p.add_argument("target", nargs="?", metavar="APP_TARGET")
    _add_instance_flag(p)
    p.set_defaults(handler=APP + "cmd_ls", daemon_handler=DAEMON + "cmd_ls")

    p = sub.add_parser("query", parents=[daemon], help="nearest rows to a text")
    p.add_argument("target", metavar="APP_FLOW_SPECIFIER|INSTANCE")
    p.add_argument("text")
    p.add_argument("--top", type=int, default=5, help=_help(_table_arg("query", "top")))
    p.add_argument("--export", help="which export to query (apps only)")
    _add_instance_flag(p)
    p.set_defaults(handler=APP + "cmd_query", daemon_handler=DAEMON + "cmd_query")

    p = sub.add_parser("show", help="print a flow's structure")
    p.add_argument("target", metavar="APP_FLOW_SPECIFIER")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--color", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(handler=APP + "cmd_show")

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

    # -- daemon-only commands: generated from the protocol's command table ------------------
    for command in COMMANDS.values():
        if command.name not in APP_COMMANDS:
            _add_daemon_command(sub, command, daemon)
    return parser


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
