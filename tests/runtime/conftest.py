"""Runtime tests: a blocking call that cocod code makes on a running event loop fails them.

blockbuster (as anyio's own suite uses it) patches the blocking functions of the standard
library (``time.sleep``, file and socket I/O, ``os.stat``, lock waits …) to raise
``BlockingError`` when called *from a thread that runs an event loop* — here the library
loop of the bridge — with a cocod module on the stack. Only cocod's modules are scanned:
the tests' own helpers (``SqlHelper`` runs ``asyncio.run``) may block.

It is active for the test body only (a ``pytest_runtest_call`` wrapper), not while fixtures
set up or tear down: those start Postgres and create databases synchronously, which is
their job, and ``cocod.stop()`` at teardown is exercised by the tests that call it.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

_active: list[BlockBuster] = []


def _allow_what_must_block(bb: BlockBuster) -> None:
    """Blocking that is allowed on a loop, each with why.

    The import system blocks by nature (reading module files); blockbuster already allows
    it in importlib's own frames, and nothing more was needed.
    """
    # A sync cocod API blocks its caller by contract; called from inside a running loop
    # it warns (RuntimeWarning: use the *_async variant), which a test checks.
    # asyncpg reads ~/.pgpass (a stat, maybe a small read) while it opens a connection:
    # the driver's choice, once per new connection, local and short.
    for name in ("os.stat", "io.BufferedReader.read", "io.TextIOWrapper.read"):
        bb.functions[name].can_block_in("asyncpg/connect_utils.py", {"_read_password_file"})
    for name in ("threading.Lock.acquire", "threading.Lock.acquire_lock"):
        bb.functions[name].can_block_in("cocod/runtime/bridge.py", {"run", "_ensure_portal"})


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    with blockbuster_ctx("cocod") as bb:
        _allow_what_must_block(bb)
        _active.append(bb)
        try:
            return (yield)
        finally:
            _active.pop()


@pytest.fixture
def active_blockbusters() -> Iterator[list[BlockBuster]]:
    """The BlockBusters active while the test body runs (empty during fixture setup)."""
    yield _active
