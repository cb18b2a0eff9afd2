"""Built-in targets (``cocoindex.targets`` in v0)."""

from cocod.ops.targets import Postgres, PostgresColumnOptions, PostgresSqlCommand

__all__ = ["Postgres", "PostgresColumnOptions", "PostgresSqlCommand"]
