"""v0's ``cocoindex.lib``: library-level set-up (``init``, ``stop``, ``@settings``).

The functions live in :mod:`cocod.runtime.context`; this is v0's import path for them.
``start_server`` started v0's CocoInsight HTTP server, which cocod does not have.
"""

from __future__ import annotations

from cocod.errors import CocodError
from cocod.runtime.context import init, settings, stop
from cocod.setting import ServerSettings


def start_server(settings: ServerSettings) -> None:
    """v0 served CocoInsight over HTTP; cocod has no such server, so this says what to use."""
    del settings
    raise CocodError(
        "cocod has no CocoInsight server (cocoindex.start_server); query the target tables "
        "directly or with Flow.search(), and run `cocod serve` for live updates"
    )


__all__ = ["init", "settings", "start_server", "stop"]
