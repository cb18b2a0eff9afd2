"""Deprecated v0 alias of :mod:`cocod.targets`."""

from cocod.targets import Postgres, PostgresColumnOptions, PostgresSqlCommand

__all__ = ["Postgres", "PostgresColumnOptions", "PostgresSqlCommand"]
