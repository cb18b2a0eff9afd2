"""The one structlog configuration of the process.

JSON lines when stderr is not a terminal (journald, CI logs), a readable console format
when a person is watching. Library code only calls ``structlog.get_logger()``; entry points
(CLI, daemon) call :func:`configure_logging` once.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog and stdlib logging once; later calls only change the level."""
    global _configured
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    if not _configured:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        _configured = True
