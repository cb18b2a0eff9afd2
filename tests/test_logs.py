"""When stderr is not a terminal, every line the process logs is one JSON object."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.daemon.harness import ROOT

PROBE = """
import logging, warnings
import structlog
from cocod.logs import configure_logging

configure_logging("info")
structlog.get_logger().info("cocod.event", answer=42)
structlog.get_logger().warning("row.failed", key="caf\\udce9.md")
logging.getLogger("asyncpg.pool").warning("connection %s was terminated", "c1")
try:
    raise ConnectionResetError("lost")
except ConnectionResetError:
    logging.getLogger("asyncpg.protocol").exception("unhandled error\\nover two lines")
try:
    raise OSError("refused")
except OSError:
    logging.getLogger("asyncpg.pool").warning("Failed to restore the floor", exc_info=True)
warnings.warn("a library warning", UserWarning, stacklevel=1)
configure_logging("info")  # a second call must not add a second handler
logging.getLogger("watchfiles").error("once")
"""


def test_library_logs_and_tracebacks_are_json_lines() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    records = [json.loads(line) for line in lines]  # fails on any non-JSON line
    by_event = {r["event"]: r for r in records}
    assert by_event["cocod.event"]["answer"] == 42
    assert by_event["row.failed"]["key"] == "caf\\xe9.md"  # a non-UTF-8 file name's byte
    assert by_event["connection c1 was terminated"]["logger"] == "asyncpg.pool"
    failed = by_event["unhandled error\nover two lines"]
    assert failed["level"] == "error" and "ConnectionResetError: lost" in failed["exception"]
    assert any("a library warning" in r["event"] for r in records)
    assert [r["event"] for r in records].count("once") == 1
    # The pool's refill retries during an outage: one line with the error, no traceback.
    refill = by_event["Failed to restore the floor: OSError: refused"]
    assert "exception" not in refill
    assert len(records) == 7, lines
