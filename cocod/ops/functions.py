"""Built-in function specs (``cocod.functions``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cocod.auth_registry import TransientAuthEntryReference
from cocod.flow.specs import FunctionSpec
from cocod.llm import LlmApiType, LlmSpec, OpenAiConfig, VertexAiConfig


@dataclass
class CustomLanguageSpec:
    language_name: str
    separators_regex: list[str]
    aliases: list[str] = field(default_factory=list)


class SplitRecursively(FunctionSpec):
    """Split text into chunks at the highest-level boundaries that fit ``chunk_size``."""

    custom_languages: list[CustomLanguageSpec] = field(default_factory=list)


class DetectProgrammingLanguage(FunctionSpec):
    """File name → language name accepted by SplitRecursively (``None`` if unknown)."""


class SentenceTransformerEmbed(FunctionSpec):
    """Embed text with a sentence-transformers model (bundled MiniLM resolved offline)."""

    model: str
    args: dict[str, Any] | None = None


class SplitBySeparators(FunctionSpec):
    """Split text at regex separators only; rows shaped like SplitRecursively's.

    ``keep_separator``: ``"LEFT"`` ends each chunk with its separator, ``"RIGHT"`` starts the
    next chunk with it, ``"NONE"`` drops it. ``trim`` strips ASCII whitespace from each
    chunk; empty chunks are dropped unless ``include_empty``.
    """

    separators_regex: list[str] = field(default_factory=list)
    keep_separator: Literal["NONE", "LEFT", "RIGHT"] = "NONE"
    include_empty: bool = False
    trim: bool = True


class ParseJson(FunctionSpec):
    """Parse text into a JSON value (``language`` is a hint; only JSON is known, as in v0)."""


class EmbedText(FunctionSpec):
    """Embed text with a model served over an OpenAI-compatible HTTP API."""

    api_type: LlmApiType
    model: str
    address: str | None = None
    output_dimension: int | None = None
    expected_output_dimension: int | None = None
    task_type: str | None = None
    api_config: VertexAiConfig | OpenAiConfig | None = None
    api_key: TransientAuthEntryReference[str] | None = None


class ExtractByLlm(FunctionSpec):
    """Ask an LLM to fill ``output_type`` (a dataclass or a plain type) from text or an image."""

    llm_spec: LlmSpec
    output_type: type
    instruction: str | None = None
