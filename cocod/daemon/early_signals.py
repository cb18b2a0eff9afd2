"""Hold SIGTERM, SIGINT and SIGHUP from the first instant of ``cocod serve``.

Until the event loop's signal receiver opens, the default action of these signals kills
the process, whatever it is doing (importing, starting the embedded Postgres, running
initdb). :func:`hold` replaces the default with a handler that only records the signal;
the daemon replays what was recorded as soon as its receiver is open. This module imports
nothing heavy, so the entry point can call :func:`hold` before importing the daemon.
"""

from __future__ import annotations

import signal
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
