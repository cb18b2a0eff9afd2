"""Argument definitions of the library commands (no heavy imports: handlers load lazily)."""

from __future__ import annotations

import argparse

_APP = "cocod.cli.app_commands:"


def add_app_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("setup", help="create or update the persistent setup of an app's flows")
    p.add_argument("app_target")
    p.add_argument("-f", "--force", action="store_true", help="apply without asking")
    p.add_argument("--reset", action="store_true", help="drop the flows first")
    p.set_defaults(handler=_APP + "cmd_setup")

    p = sub.add_parser("drop", help="drop the targets and internal state of an app's flows")
    p.add_argument("app_target")
    p.add_argument("flow_names", nargs="*")
    p.add_argument("-f", "--force", action="store_true")
    p.set_defaults(handler=_APP + "cmd_drop")

    p = sub.add_parser("update", help="set up if needed, then run one catch-up update")
    p.add_argument("app_flow", metavar="APP_FLOW_SPECIFIER")
    p.add_argument("-L", "--live", action="store_true")
    p.add_argument("--reexport", action="store_true", help="write every target row again")
    p.add_argument("--full-reprocess", action="store_true", help="recompute every row")
    p.add_argument("--setup", action="store_true", help="(default; kept for v0 compatibility)")
    p.add_argument("--reset", action="store_true", help="drop the flows first")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(handler=_APP + "cmd_update")

    p = sub.add_parser("ls", help="list an app's flows, or the flows set up in the database")
    p.add_argument("app_target", nargs="?")
    p.set_defaults(handler=_APP + "cmd_ls")

    p = sub.add_parser("show", help="print a flow's structure")
    p.add_argument("app_flow", metavar="APP_FLOW_SPECIFIER")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--color", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(handler=_APP + "cmd_show")

    p = sub.add_parser("query", help="top-K rows nearest to a text, by the export's vector index")
    p.add_argument("app_flow", metavar="APP_FLOW_SPECIFIER")
    p.add_argument("text")
    p.add_argument("--top", type=int, default=5, help="how many results (default 5)")
    p.add_argument("--export", help="which export to query (default: the first with an index)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_APP + "cmd_query")
