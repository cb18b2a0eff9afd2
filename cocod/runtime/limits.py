"""Process-wide bounds on a flow's work: the thread limiter and the per-row output cap.

They are shared by every flow of the process (readers and functions of each source, setup,
the update pass), so they live apart from any one flow's machinery.

``COCOD_MAX_ROWS_PER_SOURCE_ROW`` (default 100,000) bounds the rows one source row may
produce for one export; more is that row's error, found while the rows are collected.
"""

from __future__ import annotations

import os

import anyio

from cocod.engine.evaluator import DEFAULT_MAX_ROWS_PER_SOURCE_ROW, MAX_ROWS_KNOB
from cocod.errors import SettingsError

_THREAD_LIMITER: anyio.CapacityLimiter | None = None


def thread_limiter() -> anyio.CapacityLimiter:
    """One limiter for blocking work of every flow in the process (file reads, functions)."""
    global _THREAD_LIMITER
    if _THREAD_LIMITER is None:
        _THREAD_LIMITER = anyio.CapacityLimiter(8)
    return _THREAD_LIMITER


def max_rows_per_source_row(settings: object) -> int:
    """The per-row output cap: a setting if the settings carry one, else the environment."""
    value = getattr(settings, "max_rows_per_source_row", None)
    if value is None:
        raw = os.environ.get(MAX_ROWS_KNOB, "").strip()
        if not raw:
            return DEFAULT_MAX_ROWS_PER_SOURCE_ROW
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise SettingsError(f"{MAX_ROWS_KNOB}={raw!r} is not a whole number") from None
    if int(value) < 1:
        raise SettingsError(f"{MAX_ROWS_KNOB} must be at least 1 (it is {value})")
    return int(value)


__all__ = ["max_rows_per_source_row", "thread_limiter"]
