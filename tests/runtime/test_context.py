"""Library context settings: names cocod puts into SQL are validated before any is used."""

from __future__ import annotations

import pytest

import cocod as cocoindex
from cocod.errors import NamingError


def test_hostile_internal_schema_name_is_rejected(database_url: str) -> None:
    with pytest.raises(NamingError):
        cocoindex.init(
            cocoindex.Settings(
                database=cocoindex.DatabaseConnectionSpec(url=database_url),
                db_schema_name="o'brien",
            )
        )
