"""A process that used the sync API exits: nothing the library started keeps it alive.

With the bridge's portal stopped from a finaliser after its loop thread had frozen, a
process hung after its last line; a pytest run of the API-surface tests showed it every
time, so that run, in a subprocess with a deadline, is the check.
"""

from __future__ import annotations

import subprocess
import sys

from tests.daemon.harness import ROOT


def test_a_process_that_used_the_sync_api_exits() -> None:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command.append("tests/runtime/test_api_surface.py")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
