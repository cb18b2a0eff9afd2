"""Target specs (``cocod.targets``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cocod.flow.specs import TargetSpec


@dataclass
class PostgresColumnOptions:
    type: Literal["vector", "halfvec"] | None = None


class Postgres(TargetSpec):
    """A Postgres table; ``database=None`` means the internal database.

    ``adopt_existing`` (a cocod extension, not in v0): setup refuses a table that already
    exists and that cocod did not create, since writing into it and dropping it later
    would destroy data cocod never owned. With ``adopt_existing=True`` setup uses the
    table as it is (adding the vector indexes it lacks); drop then deletes only the rows
    cocod wrote and leaves the table. Changing it does not reprocess any row.
    """

    database: Any = None
    table_name: str | None = None
    schema: str | None = None
    column_options: dict[str, PostgresColumnOptions] | None = None
    adopt_existing: bool | None = None


@dataclass
class PostgresSqlCommand:
    """Attachment: SQL run when the target is set up, and its teardown when dropped."""

    name: str
    setup_sql: str
    teardown_sql: str | None = None
