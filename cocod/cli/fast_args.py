"""The command lines a shell prompt or a script runs every few seconds, read without argparse.

``cocod ping``, ``cocod status [NAME]`` and ``cocod ls`` with ``--json`` / ``--socket``
are a socket round trip to a daemon that answers from memory; what the user waits for is
the Python process. Importing argparse (with gettext and locale) and building its parser
of every sub-command costs more than the round trip, so these few shapes are read here
and give the same namespace argparse would (tests/cli/test_fast_args.py compares the two
on every shape). Anything else, including ``-h``, an abbreviation or an unknown option,
returns None and goes to argparse, which stays the one definition of the command line.
"""

from __future__ import annotations

from types import SimpleNamespace

APP = "cocod.cli.app_commands:"
DAEMON = "cocod.cli.daemon_commands:"

_HANDLERS: dict[str, dict[str, object]] = {
    "ping": {"handler": DAEMON + "cmd_daemon"},
    "status": {"handler": DAEMON + "cmd_daemon", "name": None},
    "ls": {
        "handler": APP + "cmd_ls",
        "daemon_handler": DAEMON + "cmd_ls",
        "target": None,
        "instance": False,
    },
}
"""Per command: what argparse's ``set_defaults`` and its positionals give when absent."""


def fast_args(argv: list[str]) -> SimpleNamespace | None:
    """The parsed command line when ``argv`` is one of the hot shapes, else None."""
    if not argv or argv[0] not in _HANDLERS:
        return None
    command = argv[0]
    values: dict[str, object] = {
        "version": False,
        "env_file": None,
        "app_dir": None,
        "command": command,
        "socket": None,
        "json": False,
        **_HANDLERS[command],
    }
    tokens = iter(argv[1:])
    for token in tokens:
        if token == "--json":
            values["json"] = True
        elif token == "--socket":
            value = next(tokens, None)
            if value is None or value.startswith("-"):
                return None  # argparse words the error
            values["socket"] = value
        elif token.startswith("--socket="):
            values["socket"] = token.removeprefix("--socket=")
        elif token == "--instance" and command == "ls":
            values["instance"] = True
        elif token.startswith("-"):
            return None
        elif command == "status" and values["name"] is None:
            values["name"] = token
        else:
            return None  # `ls APP_TARGET` or one positional too many: argparse
    return SimpleNamespace(**values)
