"""Built-in functions (``cocoindex.functions`` in v0)."""

from cocod.ops.functions import (
    CustomLanguageSpec,
    DetectProgrammingLanguage,
    SentenceTransformerEmbed,
    SplitRecursively,
)

__all__ = [
    "CustomLanguageSpec",
    "DetectProgrammingLanguage",
    "SentenceTransformerEmbed",
    "SplitRecursively",
]
