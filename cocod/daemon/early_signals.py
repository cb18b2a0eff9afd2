"""Hold SIGTERM, SIGINT and SIGHUP from the first instant of ``cocod serve``.

Until the event loop's signal receiver opens, the default action of these signals kills
the process, whatever it is doing (importing, starting the embedded Postgres, running
initdb). :func:`hold` replaces the default with a handler that only records the signal;
the daemon replays what was recorded as soon as its receiver is open. This module imports
nothing heavy, so the entry point can call :func:`hold` before importing the daemon.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_caught: list[int] = []
_previous: dict[int, Any] = {}


def _remember(signum: int, frame: FrameType | None) -> None:
    _caught.append(signum)


def hold() -> None:
    """Record these signals instead of dying of them (idempotent; main thread only)."""
    for signum in SIGNALS:
        if signum not in _previous:
            _previous[signum] = signal.signal(signum, _remember)


def caught() -> list[int]:
    """The signals recorded so far, in order (the live list: later ones are appended)."""
    return _caught


def release() -> None:
    """Restore the handlers that were there before :func:`hold`."""
    for signum, handler in _previous.items():
        signal.signal(signum, handler)
    _previous.clear()
    _caught.clear()


def hold_while_draining(on_second_interrupt: Callable[[], None]) -> None:
    """After the event loop's signal receiver closed (asyncio then restores the *default*
    action, which would kill a daemon still finishing its drain): record SIGTERM and
    SIGHUP again, and let a SIGINT call ``on_second_interrupt`` (Ctrl+C twice exits)."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _remember)
    signal.signal(signal.SIGINT, lambda signum, frame: on_second_interrupt())


def exit_at_once_on_signal(code: int) -> None:
    """After the daemon stopped: a SIGTERM/SIGINT that arrives while the interpreter exits
    (closing the pool, releasing the embedded server, joining threads) ends the process at
    once with ``code`` — the daemon's own result — rather than killing it with the signal.

    The drain is over by then and every transaction is committed or rolled back, so
    nothing is lost by skipping the remaining exit hooks; the embedded server's users file
    notices the dead pid. systemd sends a second SIGTERM to a slow exit, and it must not
    turn a clean stop into "killed by signal".
    """

    def _exit(signum: int, frame: FrameType | None) -> None:
        os._exit(code)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit)
    _previous.clear()
    _caught.clear()
