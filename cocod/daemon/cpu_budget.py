"""Keep background indexing from taking the whole machine: the model's compute threads.

``[daemon] embed_threads = N`` caps the threads the embedding model computes with. The
model (torch, through sentence-transformers) loads lazily, on the first embedding, long
after start-up, and a flow's own module may import torch earlier. So the cap is applied
twice: as the thread-count environment variables before anything imports torch (torch,
OpenMP, MKL, OpenBLAS and the tokenizers' thread pool read them when they start), and
with ``torch.set_num_threads`` whenever an instance's flow has been built and torch is
already imported — always before the model's first encode, which runs later, in a pass.

The user systemd unit adds the scheduler's share on top (``Nice=10``, ``CPUWeight=20``,
``IOSchedulingClass=idle``): see docs/background-indexing.md.
"""

from __future__ import annotations

import os
import sys

import structlog

log = structlog.get_logger(__name__)

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "RAYON_NUM_THREADS",  # the tokenizers' pool
)


def apply_embed_threads(threads: int | None) -> None:
    """At start-up, before any flow is loaded: the environment, and torch if imported."""
    if threads is None:
        return
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    log.info("cpu.embed_threads", threads=threads)
    limit_torch_threads(threads)


def limit_torch_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` if torch is imported and uses another count."""
    if threads is None:
        return
    torch = sys.modules.get("torch")
    if torch is None:
        return  # not imported yet: it will read OMP_NUM_THREADS when it is
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        log.info("cpu.torch_threads", threads=threads)
