"""``cocod`` entry point. Heavy modules are imported by the command that needs them."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence


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
    try:
        return _main(argv)
    except BrokenPipeError:  # `cocod query ... | head`: the reader left; that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    from cocod.cli.parser import build_parser, looks_like_app_target

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
    handler_name = args.handler
    daemon_handler = getattr(args, "daemon_handler", None)
    if (
        daemon_handler is not None
        and not looks_like_app_target(args.target)
        and (args.command != "ls" or _daemon_answers(args))
    ):
        handler_name = daemon_handler
    module_name, _, function_name = handler_name.partition(":")
    if module_name.endswith("daemon_commands") and args.command != "serve":
        # A thin client: no library, no asyncpg, no torch.
        handler = getattr(importlib.import_module(module_name), function_name)
        return int(handler(args))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from cocod.errors import CocodError
    from cocod.logs import configure_logging

    if args.command != "serve":
        configure_logging(os.environ.get("COCOD_LOG_LEVEL", "warning"))
    handler = getattr(importlib.import_module(module_name), function_name)
    try:
        return int(handler(args))
    except CocodError as e:
        print(f"cocod: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _daemon_answers(args: object) -> bool:
    """``cocod ls`` without an app lists the daemon's instances when one is running."""
    import socket

    from cocod.cli.daemon_commands import socket_path

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(socket_path(args)))
        return True
    except OSError:
        return False
    finally:
        probe.close()


if __name__ == "__main__":
    sys.exit(main())
