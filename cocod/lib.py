"""v0's ``cocoindex.lib``: library-level set-up (``init``, ``stop``, ``@settings``).

The functions live in :mod:`cocod.runtime.context`; this is v0's import path for them.
``start_server`` started v0's CocoInsight HTTP server, which cocod does not have.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cocod.errors import CocodError
from cocod.flow.naming import validate_app_namespace
from cocod.runtime.context import init, settings, stop
from cocod.setting import ServerSettings, Settings


def prepare_settings(settings: Settings) -> dict[str, Any]:
    """v0's ``lib.prepare_settings``: check ``settings`` as ``init()`` does and return them
    as plain data (v0 handed that form to its engine; it holds the database password, so
    do not log it). A bad app namespace raises :class:`~cocod.errors.NamingError`."""
    if settings.app_namespace:
        validate_app_namespace(settings.app_namespace)
    return dataclasses.asdict(settings)


def start_server(settings: ServerSettings) -> None:
    """v0 served CocoInsight over HTTP; cocod has no such server, so this says what to use."""
    del settings
    raise CocodError(
        "cocod has no CocoInsight server (cocoindex.start_server); query the target tables "
        "directly or with Flow.search(), and run `cocod serve` for live updates"
    )


__all__ = ["init", "prepare_settings", "settings", "start_server", "stop"]
