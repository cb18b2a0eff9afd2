"""Target specs (``cocod.targets``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cocod.flow.specs import TargetSpec


@dataclass
class PostgresColumnOptions:
    type: Literal["vector", "halfvec"] | None = None


class Postgres(TargetSpec):
    """A Postgres table; ``database=None`` means the internal database."""

    database: Any = None
    table_name: str | None = None
    schema: str | None = None
    column_options: dict[str, PostgresColumnOptions] | None = None


@dataclass
class PostgresSqlCommand:
    """Attachment: SQL run when the target is set up, and its teardown when dropped."""

    name: str
    setup_sql: str
    teardown_sql: str | None = None
