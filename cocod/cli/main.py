"""``cocod`` entry point. Heavy modules are imported by the command that needs them.

The daemon's hot commands (``ping``, ``status``, ``ls``) are read by
:mod:`cocod.cli.fast_args` and sent by :mod:`cocod.cli.daemon_commands`: this module,
those two and the control client import only ``os``, ``sys``, ``json``, ``socket``,
``time`` and ``types``, so such a process costs a few milliseconds more than starting
Python (tests/cli/test_thin_client.py checks what they import). Everything else is parsed
by argparse, with only the named sub-command built.
"""

from __future__ import annotations

import os
import sys

from cocod.cli.fast_args import fast_args

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from types import SimpleNamespace
    from typing import Any


def _load_env(args: argparse.Namespace | SimpleNamespace) -> int | None:
    """Load ``-e/--env-file`` or the ``.env`` v0 would find (the current directory, then
    its parents), before any app is imported, so ``COCOINDEX_DATABASE_URL`` in it decides
    the database. Variables already in the environment win, as in v0. ``serve`` reads only
    an explicit file: a service's environment comes from its unit, not its working folder.

    Returns an exit status when the named file cannot be read.
    """
    explicit: str | None = args.env_file
    if explicit is None and args.command == "serve":
        return None
    if explicit is not None:
        path = os.path.abspath(explicit)
        if not os.path.isfile(path):
            print(
                f"cocod: error: the env file {explicit!r} (-e/--env-file) does not exist or is "
                "not a file; give the path of a KEY=VALUE file",
                file=sys.stderr,
            )
            return 2
    else:
        found = _find_env_file(os.getcwd())
        if found is None:
            return None
        path = found
    from dotenv import load_dotenv  # only when there is a file: keeps `cocod status` quick

    try:
        loaded = load_dotenv(dotenv_path=path, override=False)
    except OSError as e:
        print(
            f"cocod: error: cannot read the env file {path!r}: {e.strerror or e}", file=sys.stderr
        )
        return 2
    if loaded and not getattr(args, "quiet", False):
        print(f"Loaded environment variables from: {path}", file=sys.stderr)
    return None


def _find_env_file(start: str) -> str | None:
    """The nearest ``.env`` in ``start`` or a folder above it (python-dotenv's search)."""
    folder = os.path.abspath(start)
    while True:
        candidate = os.path.join(folder, ".env")
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


SETUP_FLAG_DEPRECATED = (
    "Warning: The --setup flag is deprecated and will be removed in a future version. "
    "Setup is now always enabled by default."
)
"""v0's note for ``update --setup``, word for word (setup always runs first)."""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `cocod query ... | head`: the reader left; that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: Sequence[str] | None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args: Any = fast_args(words)  # a SimpleNamespace, else argparse's Namespace
    if args is None:
        from cocod.cli.parser import build_parser, command_word

        args = build_parser(only=command_word(words)).parse_args(words)
    if args.version:
        from cocod import __version__

        print(f"cocod {__version__}")
        return 0
    if args.command is None:
        from cocod.cli.parser import build_parser

        build_parser().print_help()  # every command, whatever was built to parse
        return 2
    if (status := _load_env(args)) is not None:
        return status
    if args.app_dir:
        sys.path.insert(0, os.path.abspath(args.app_dir))
    if args.command == "update" and args.setup:
        print(SETUP_FLAG_DEPRECATED, file=sys.stderr)
    handler_name = args.handler
    daemon_handler = getattr(args, "daemon_handler", None)
    if daemon_handler is not None:
        from cocod.cli.targets import TargetConflictError, is_daemon_target

        try:
            if is_daemon_target(args):
                handler_name = daemon_handler
        except TargetConflictError as e:
            print(f"cocod: error: {e}", file=sys.stderr)
            return 2
    module_name, _, function_name = handler_name.partition(":")
    if module_name.endswith("daemon_commands") and args.command != "serve":
        # A thin client: no library, no asyncpg, no torch.
        handler = getattr(_module(module_name), function_name)
        return int(handler(args))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import_structlog_without_rich()
    from cocod.errors import CocodError
    from cocod.logs import configure_logging

    if args.command != "serve":
        configure_logging(os.environ.get("COCOD_LOG_LEVEL", "warning"))
    handler = getattr(_module(module_name), function_name)
    # What is loaded by now (the engine, the driver, the daemon) lives as long as the
    # process: frozen, the cyclic collector no longer walks it, and the collections of a
    # fresh `cocod update` walk only what came after (100 ms less for a no-op update,
    # bench/cli_startup.py). Reference counting frees objects as before.
    import gc

    gc.freeze()
    try:
        return int(handler(args))
    except CocodError as e:
        print(f"cocod: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def import_structlog_without_rich() -> None:
    """Import structlog while rich is hidden from it, unless either is already loaded.

    Why: ``structlog.dev`` and ``structlog.tracebacks`` import rich and pygments when rich
    is installed, for pretty tracebacks, and cocod installs rich for its progress bars:
    about 115 ms of every library command's and the daemon's start-up
    (bench/cli_startup.py). cocod turns
    exceptions into text itself (``format_exc_info`` runs before the renderer, see
    :mod:`cocod.logs`), so those formatters are never used. Only our own entry point does
    this, in a process that is ours; rich stays importable (the progress display imports
    it when it draws).
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


def _module(name: str) -> object:
    """The named module, imported by the builtin: ``importlib`` (and the ``warnings`` it
    imports) would cost every thin-client command for one call."""
    __import__(name)
    return sys.modules[name]


if __name__ == "__main__":
    sys.exit(main())
