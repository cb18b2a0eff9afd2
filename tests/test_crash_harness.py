"""The crash and fault harness, short: a few daemon SIGKILLs (initdb, setup, catch-up,
embedding, commits, reload), a postmaster SIGKILL, a frozen cluster and injected write
failures while files keep changing; every table must then equal a from-scratch build.

The full run (``bench/crash_harness.py`` with its defaults) is the benchmark; this keeps
its core honest in every test run. Figures are printed, never asserted on.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from bench.crash_harness import Options, run_harness, summary


def test_short_crash_run_loses_nothing(tmp_path: Path) -> None:
    result = run_harness(
        Options(kills=5, pg_kills=1, pg_stops=1, write_failures=3, seconds=80, seed=7),
        tmp_path / "work",
    )
    print(summary(result))
    print(json.dumps(asdict(result)["bugs"], indent=2))
    assert result.kills == 5 and result.pg_kills == 1 and result.pg_stops == 1
    assert result.write_failures_injected >= 3
    assert result.converged, result.bugs
    rows = result.rows
    assert (rows["lost"], rows["duplicated"], rows["stale"], rows["orphaned"]) == (0, 0, 0, 0)
    assert rows["bad_vector"] == 0 and rows["rows"] > 0
    assert result.embeddings_minimum > 0
    assert result.verify and not any(v["has_drift"] for v in result.verify.values()), result.verify
    assert result.daemon_exit_code == 0
    assert not result.postgres_left_running
