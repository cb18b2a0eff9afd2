"""Built-in functions (``cocoindex.functions`` in v0)."""

from cocod.ops.functions import (
    CustomLanguageSpec,
    DetectProgrammingLanguage,
    EmbedText,
    ExtractByLlm,
    ParseJson,
    SentenceTransformerEmbed,
    SplitBySeparators,
    SplitRecursively,
)

__all__ = [
    "CustomLanguageSpec",
    "DetectProgrammingLanguage",
    "EmbedText",
    "ExtractByLlm",
    "ParseJson",
    "SentenceTransformerEmbed",
    "SplitBySeparators",
    "SplitRecursively",
]
