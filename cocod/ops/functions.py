"""Built-in function specs (``cocod.functions``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cocod.flow.specs import FunctionSpec


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
