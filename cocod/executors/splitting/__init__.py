"""`SplitRecursively`'s implementation, following CocoIndex v0's rules (docs/splitter-parity.md).

``text`` (byte/character offsets, whitespace), ``separators`` (regex levels, custom
languages), ``syntax`` (tree-sitter parsing), ``atoms`` (phase 1: the recursive cut),
``merging`` (phase 2: choosing chunks) and ``recursive`` (the executor).
"""

from __future__ import annotations

from .recursive import Chunk, RecursiveSplitter
from .separators import CustomLanguage
from .text import TextPosition

__all__ = ["Chunk", "CustomLanguage", "RecursiveSplitter", "TextPosition"]
