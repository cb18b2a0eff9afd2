"""``cocod`` entry point. Heavy modules are imported by the command that needs them."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cocod",
        description="Keep Postgres + pgvector indexes in sync with folders of documents.",
    )
    parser.add_argument("-V", "--version", action="store_true", help="print the version")
    parser.add_argument("-e", "--env-file", help="load environment variables from this file")
    parser.add_argument("-d", "--app-dir", help="prepend this folder to the import path")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from cocod.cli.app_parser import add_app_commands

    add_app_commands(sub)
    return parser


def _load_env_file(path: str) -> None:
    """KEY=VALUE lines; variables already set in the environment win (like v0)."""
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            os.environ.setdefault(key.strip().removeprefix("export "), value.strip().strip("'\""))
    print(f"Loaded environment variables from: {path}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from cocod import __version__

        print(f"cocod {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    if args.env_file:
        _load_env_file(args.env_file)
    if args.app_dir:
        sys.path.insert(0, os.path.abspath(args.app_dir))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from cocod.errors import CocodError
    from cocod.logs import configure_logging

    configure_logging(os.environ.get("COCOD_LOG_LEVEL", "warning"))
    module_name, _, function_name = args.handler.partition(":")
    import importlib

    handler = getattr(importlib.import_module(module_name), function_name)
    try:
        return int(handler(args))
    except CocodError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
