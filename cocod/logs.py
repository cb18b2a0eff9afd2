"""The one structlog configuration of the process.

JSON lines when stderr is not a terminal (journald, CI logs), a readable console format
when a person is watching. Library code only calls ``structlog.get_logger()``; entry points
(CLI, daemon) call :func:`configure_logging` once.

Libraries that log through the standard ``logging`` module (asyncpg, watchfiles, the
embedded Postgres wheel) go through the same renderer via structlog's
``ProcessorFormatter``, so in JSON mode every stderr line is one JSON object, tracebacks
included (as an ``exception`` field), instead of multi-line text a log shipper cannot
parse. Python warnings are captured the same way.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_HANDLER_NAME = "cocod"


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog and stdlib logging; calling it again replaces the setup."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _escape_undecodable_text,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    handler.addFilter(_one_line_driver_errors)
    root = logging.getLogger()
    for old in list(root.handlers):
        # Ours from an earlier call, or basicConfig's plain-text default: both would print
        # lines that are not in the chosen format.
        if old.get_name() == _HANDLER_NAME or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    logging.captureWarnings(True)  # warnings.warn() from libraries: same format, same stream
    # Libraries are chatty at INFO; their warnings and errors are what an operator needs.
    root.setLevel(max(numeric, logging.WARNING))


def _one_line_driver_errors(record: logging.LogRecord) -> bool:
    """asyncpg logs a full traceback each time it fails to refill its pool during a database
    outage (with its own backoff); the daemon already reports the outage, so keep the line
    and the error's one-line text, not the traceback."""
    if record.name == "asyncpg.pool" and record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
        record.args = None
        record.exc_info = None
        record.exc_text = None
    return True


def _escape_undecodable_text(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """File names that are not UTF-8 reach log fields as strings with lone surrogates
    (``surrogateescape``), which a UTF-8 stream refuses: show their bytes as ``\\xNN``."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                event_dict[key] = value.encode("utf-8", "surrogateescape").decode(
                    "utf-8", "backslashreplace"
                )
    return event_dict
