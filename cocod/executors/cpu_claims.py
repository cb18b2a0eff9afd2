"""Work in this process that already uses every core, so helpers that would compete stand down.

Why: a model encoding on the CPU (torch, one OpenMP team on the model thread) keeps every
core busy for as long as a batch lasts. Split worker processes started beside it take cores
from that team, whose threads then wait for each other at each barrier; and each worker is
resident memory that buys nothing, since a split costs about 1 ms per chunk against the
model's tens of ms. So a model claims the cores when a flow that embeds with it is
analysed (and again when it loads; on a GPU the load hands them back), and the split workers
(:mod:`cocod.executors.splitting.processes`) take no new work while a claim stands, unless
``COCOD_SPLIT_PROCESSES`` was set explicitly. Standard library only: the splitter checks it
per split.
"""

from __future__ import annotations

import threading

_claims: set[str] = set()
_lock = threading.Lock()


def claim_cores(owner: str) -> None:
    """Record that ``owner`` (e.g. ``"model:all-MiniLM-L6-v2"``) keeps every core busy."""
    with _lock:
        _claims.add(owner)


def release_cores(owner: str) -> None:
    with _lock:
        _claims.discard(owner)


def cores_claimed() -> bool:
    """Is anything in this process already using every core when it runs?"""
    return bool(_claims)


def claims() -> frozenset[str]:
    with _lock:
        return frozenset(_claims)
