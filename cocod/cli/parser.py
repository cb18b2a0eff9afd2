"""The ``cocod`` command line, defined without heavy imports (handlers load lazily).

Commands that exist both for apps (v0's CLI) and for the daemon decide by their target:
a path (``flows.py``, ``./main``) or a dotted module or ``app.py:Flow`` is an app target
handled in-process; a bare name (``docs``) is a daemon flow instance.
"""

from __future__ import annotations

import argparse

APP = "cocod.cli.app_commands:"
DAEMON = "cocod.cli.daemon_commands:"


def looks_like_app_target(target: str | None) -> bool:
    if not target:
        return False
    return "/" in target or target.endswith(".py") or ":" in target or "." in target


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
    p.set_defaults(handler=APP + "cmd_setup", daemon_handler=DAEMON + "cmd_setup")

    p = sub.add_parser("drop", parents=[daemon], help="drop the tables and state of flows")
    p.add_argument("target", metavar="APP_TARGET|INSTANCE")
    p.add_argument("flow_names", nargs="*")
    p.add_argument("-f", "--force", action="store_true")
    p.set_defaults(handler=APP + "cmd_drop", daemon_handler=DAEMON + "cmd_drop")

    p = sub.add_parser("update", parents=[daemon], help="set up if needed, then catch up")
    p.add_argument("target", metavar="APP_FLOW_SPECIFIER|INSTANCE")
    p.add_argument("-L", "--live", action="store_true", help="keep following file changes")
    p.add_argument("--reexport", action="store_true", help="write every target row again")
    p.add_argument("--full-reprocess", action="store_true", help="recompute every row")
    p.add_argument("--setup", action="store_true", help="(default; kept for v0 compatibility)")
    p.add_argument("--reset", action="store_true", help="drop the flows first")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(handler=APP + "cmd_update", daemon_handler=DAEMON + "cmd_update")

    p = sub.add_parser("ls", parents=[daemon], help="list flow instances, or an app's flows")
    p.add_argument("target", nargs="?", metavar="APP_TARGET")
    p.set_defaults(handler=APP + "cmd_ls", daemon_handler=DAEMON + "cmd_ls")

    p = sub.add_parser("query", parents=[daemon], help="nearest rows to a text")
    p.add_argument("target", metavar="APP_FLOW_SPECIFIER|INSTANCE")
    p.add_argument("text")
    p.add_argument("--top", type=int, default=5, help="how many results (default 5)")
    p.add_argument("--export", help="which export to query (apps only)")
    p.set_defaults(handler=APP + "cmd_query", daemon_handler=DAEMON + "cmd_query")

    p = sub.add_parser("show", help="print a flow's structure")
    p.add_argument("target", metavar="APP_FLOW_SPECIFIER")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--color", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(handler=APP + "cmd_show")

    # -- daemon-only commands ----------------------------------------------------------------
    p = sub.add_parser("ping", parents=[daemon], help="check that the daemon answers")
    p.set_defaults(handler=DAEMON + "cmd_simple")
    p = sub.add_parser("status", parents=[daemon], help="state of instances")
    p.add_argument("name", nargs="?")
    p.set_defaults(handler=DAEMON + "cmd_status")
    for name, text in (
        ("open", "open an instance (live ones start watching)"),
        ("close", "close an instance (its data stays)"),
    ):
        p = sub.add_parser(name, parents=[daemon], help=text)
        p.add_argument("name")
        p.set_defaults(handler=DAEMON + "cmd_simple")
    p = sub.add_parser("add", parents=[daemon], help="add a flow instance at runtime")
    p.add_argument("name")
    p.add_argument("definition", help="package.module:factory")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--params-json", help="all params as a JSON object")
    p.add_argument("--on-demand", action="store_true", help="not live: opened by commands")
    p.set_defaults(handler=DAEMON + "cmd_add")
    p = sub.add_parser("remove", parents=[daemon], help="remove an instance added at runtime")
    p.add_argument("name")
    p.add_argument("--drop", action="store_true", help="also drop its tables and state")
    p.set_defaults(handler=DAEMON + "cmd_remove")
    for name, text in (
        ("reload", "re-read config.toml and apply the difference"),
        ("shutdown", "drain and stop the daemon"),
    ):
        p = sub.add_parser(name, parents=[daemon], help=text)
        p.set_defaults(handler=DAEMON + "cmd_simple")
    return parser
