"""A small synchronous client of the control socket, for the CLI and tests.

Every ``cocod status`` process loads this module, so it imports only what the request
needs (``json``, ``os``, ``socket``): no ``pathlib`` and no ``typing`` at run time (the
annotations are strings; ``TYPE_CHECKING`` is spelled out so mypy still sees the names).
"""

from __future__ import annotations

import json
import os
import socket

from cocod.errors import DaemonError, DaemonUnavailableError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path
    from typing import Any

__all__ = [
    "ControlClient",
    "DaemonError",
    "DaemonUnavailableError",
    "default_socket_location",
    "default_socket_path",
]

MAX_REPLY_BYTES = 256 << 20
"""Replies (query results, status of many instances) may be far larger than requests."""


def default_socket_path(env: Mapping[str, str] | None = None) -> Path:
    """:func:`default_socket_location` as a :class:`~pathlib.Path` (for the daemon)."""
    from pathlib import Path

    return Path(default_socket_location(env))


def default_socket_location(env: Mapping[str, str] | None = None) -> str:
    """``$COCOD_SOCKET``, ``$RUNTIME_DIRECTORY``, ``$XDG_RUNTIME_DIR/cocod``, else state dir.

    A string built with :mod:`os.path`, so the CLI's thin client needs no ``pathlib``.
    """
    env = os.environ if env is None else env
    join = os.path.join
    if explicit := env.get("COCOD_SOCKET"):
        return explicit
    if runtime := env.get("RUNTIME_DIRECTORY"):
        return join(runtime.split(":")[0], "cocod.sock")
    if xdg := env.get("XDG_RUNTIME_DIR"):
        return join(xdg, "cocod", "cocod.sock")
    if state := env.get("COCOD_STATE_DIR") or env.get("STATE_DIRECTORY"):
        return join(state.split(":")[0], "cocod.sock")
    system = "/run/cocod/cocod.sock"  # the system service's RuntimeDirectory
    if os.path.exists(system):
        return system
    xdg_state = env.get("XDG_STATE_HOME") or join(os.path.expanduser("~"), ".local", "state")
    return join(xdg_state, "cocod", "cocod.sock")


class ControlClient:
    def __init__(self, path: str | os.PathLike[str], timeout: float | None = 30.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._next_id = 1

    def call(
        self,
        cmd: str,
        args: Mapping[str, Any] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> Any:
        request_id = self._next_id
        self._next_id += 1
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.path)
            except (FileNotFoundError, ConnectionRefusedError, PermissionError) as e:
                raise DaemonUnavailableError(
                    f"no cocod daemon answers on {self.path} ({e.strerror or e}); "
                    "start one with `cocod serve`"
                ) from None
            payload = {"id": request_id, "cmd": cmd, "args": dict(args or {})}
            sock.sendall(json.dumps(payload).encode() + b"\n")
            with sock.makefile("rb") as stream:
                while True:
                    line = stream.readline(MAX_REPLY_BYTES)
                    if not line:
                        raise DaemonUnavailableError(
                            f"the daemon on {self.path} closed the connection without replying"
                        )
                    try:
                        message = json.loads(line)
                    except ValueError:
                        raise DaemonUnavailableError(
                            f"the daemon on {self.path} sent a reply that is not JSON; "
                            "is this a cocod socket?"
                        ) from None
                    if not isinstance(message, dict):
                        continue
                    if message.get("id") != request_id:
                        continue
                    if "event" in message:
                        if on_event is not None:
                            on_event(message)
                        continue
                    if message.get("ok"):
                        return message.get("result")
                    error = message.get("error") or {}
                    raise DaemonError(error.get("code", "internal"), error.get("message", ""))
        except TimeoutError:
            raise DaemonUnavailableError(
                f"the daemon on {self.path} did not answer within {self.timeout:.0f} s"
            ) from None
        finally:
            sock.close()
