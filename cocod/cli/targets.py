"""Whether a command's target is a v0 app (run in-process) or a daemon flow instance.

v0's READMEs say ``cocoindex update main``: a bare module name. cocod also names daemon
instances with bare names (``cocod update docs``), so a bare name is the app when
``NAME.py`` or the package ``NAME/`` is in the app folder (``-d``, else the current one)
and no daemon instance has that name; when both exist, the user must pick, and the error
says how. Paths, ``.py`` files, dotted modules and ``APP:FLOW`` are always apps;
``--instance`` always means the daemon. Only ``os`` at run time: ``cocod ls`` passes
through here on its way to the daemon and stays a thin client (no argparse, no pathlib).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse


class TargetConflictError(Exception):
    """A bare name that is both an app in the app folder and a daemon instance."""


def looks_like_app_target(target: str | None) -> bool:
    """A path, a ``.py`` file, a dotted module or ``APP:FLOW``: never an instance name."""
    if not target:
        return False
    return "/" in target or target.endswith(".py") or ":" in target or "." in target


def app_file_for(name: str, app_dir: str | None) -> str | None:
    """``NAME.py`` or ``NAME/__init__.py`` in the app folder, if there is one."""
    if not name.isidentifier():
        return None
    folder = app_dir or os.getcwd()
    for candidate in (
        os.path.join(folder, f"{name}.py"),
        os.path.join(folder, name, "__init__.py"),
    ):
        if os.path.isfile(candidate):
            return candidate
    return None


def daemon_instance_names(args: argparse.Namespace) -> set[str] | None:
    """Names of the daemon's instances, or None when no daemon answers (within 2 s)."""
    from cocod.cli.daemon_commands import socket_path
    from cocod.control.client import ControlClient, DaemonError, DaemonUnavailableError

    try:
        result = ControlClient(socket_path(args), timeout=2.0).call("ls")
    except (DaemonUnavailableError, DaemonError, OSError):
        return None
    if not isinstance(result, list):
        return set()
    return {str(r.get("name")) for r in result if isinstance(r, dict)}


def is_daemon_target(args: argparse.Namespace) -> bool:
    """True when the command goes to the daemon; raises TargetConflictError when a bare
    name could be either."""
    target: str | None = getattr(args, "target", None)
    if getattr(args, "instance", False):
        return True
    if target is None:
        # `cocod ls`: the daemon's instances when one runs, else the app namespace's flows.
        return args.command == "ls" and daemon_instance_names(args) is not None
    if looks_like_app_target(target):
        return False
    app_file = app_file_for(target, getattr(args, "app_dir", None))
    if app_file is None:
        return True
    instances = daemon_instance_names(args)
    if instances is None or target not in instances:
        return False
    base = os.path.basename(app_file)
    shown = f"./{base}" if base != "__init__.py" else f"./{target}/"
    raise TargetConflictError(
        f"{target!r} is both the app {app_file} and a daemon instance; write "
        f"`cocod {args.command} {shown}` for the app or "
        f"`cocod {args.command} --instance {target}` for the instance"
    )
