"""Daemon tests: a blocking call made by cocod code on a running event loop fails the test.

Most daemon tests drive a real ``cocod serve`` subprocess; the ones that run daemon parts in
this process (the database supervisor, for one) do it under blockbuster, as anyio's own
suite does, scanning only cocod's modules (the tests' own helpers may block).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    with blockbuster_ctx("cocod") as bb:
        yield bb
