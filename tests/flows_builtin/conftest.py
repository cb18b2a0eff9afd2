"""The built-in flows run under the runtime tests' blockbuster: a blocking call that cocod
code makes on the library's event loop (a stat of a .gitignore, say) fails the test."""

from __future__ import annotations

from tests.runtime.conftest import active_blockbusters, pytest_runtest_call

__all__ = ["active_blockbusters", "pytest_runtest_call"]
