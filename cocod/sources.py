"""Built-in sources (``cocoindex.sources`` in v0)."""

from cocod.ops.sources import LocalFile

__all__ = ["LocalFile"]
