"""`SplitRecursively`'s executor; the implementation lives in ``cocod.executors.splitting``.

Kept so that ``from cocod.executors.splitter import RecursiveSplitter`` (and ``Chunk``,
``CustomLanguage``, ``TextPosition``) keeps working for its callers.
"""

from __future__ import annotations

from .splitting import Chunk, CustomLanguage, RecursiveSplitter, TextPosition

__all__ = ["Chunk", "CustomLanguage", "RecursiveSplitter", "TextPosition"]
