"""Runs benchmark workers for either engine and records what they measured.

Why its own module: every figure (bench/figures.py) needs the same three things: a worker
process per step with the right interpreter and database URL for its engine, the engines
in turns (so a drift in the machine's speed hits both), and one place that keeps every
sample for the table and the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from setup_db import BenchPostgres

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
WORKER = BENCH / "worker.py"
COCOINDEX_PYTHON = REPO_ROOT / ".venv-cocoindex" / "bin" / "python"


class Bench:
    """Runs workers, alternates engines and records every measured value."""

    def __init__(self, args: argparse.Namespace, work: Path, pg: BenchPostgres) -> None:
        self.args, self.work, self.pg = args, work, pg
        wanted = [e.strip() for e in args.engines.split(",") if e.strip()]
        self.engines = [e for e in wanted if e == "cocod" or self.has_cocoindex()]
        if "cocoindex" in wanted and "cocoindex" not in self.engines:
            print(
                f"note: {COCOINDEX_PYTHON} has no cocoindex 0.3.39; run "
                "bench/setup_cocoindex_venv.sh for the side-by-side columns"
            )
        for e in self.engines:
            pg.create_database(f"bench_{e}")
        self.figures: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.kept: dict[tuple[str, int], tuple[Any, str, str]] = {}
        """(engine, files) → (corpus, flow, table) the engine figure indexed and left in
        place for the live figure, so its 50,000-file catch-up is not a second index."""

    def log(self, message: str) -> None:
        """A progress line with the time since the run started (the full run is long)."""
        elapsed = int(time.perf_counter() - self.started)
        print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {message}", flush=True)

    @staticmethod
    def has_cocoindex() -> bool:
        if not COCOINDEX_PYTHON.exists():
            return False
        check = "import importlib.metadata as m; print(m.version('cocoindex'))"
        res = subprocess.run([COCOINDEX_PYTHON, "-c", check], capture_output=True, text=True)
        return res.returncode == 0 and res.stdout.strip() == "0.3.39"

    def order(self, run: int) -> list[str]:
        """Engines in turn: cocod first in even runs, CocoIndex first in odd ones."""
        return self.engines if run % 2 == 0 else self.engines[::-1]

    def record(self, fig: str, case: str, engine: str, metric: str, value: Any) -> None:
        slot = self.figures.setdefault(fig, {}).setdefault(case, {}).setdefault(engine, {})
        values = slot.setdefault(metric, [])
        if isinstance(value, list):
            values.extend(value)
        elif value is not None:
            values.append(value)

    def worker(self, engine: str, op: str, flow: str, table: str, source: Path, *extra: str) -> Any:
        python = sys.executable if engine == "cocod" else str(COCOINDEX_PYTHON)
        url = self.pg.url(f"bench_{engine}")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        for key in ("COCOD_DATABASE_URL", "COCOINDEX_DATABASE_URL", "PYTHONPATH"):
            env.pop(key, None)
        if engine == "cocod":
            env["COCOD_DATABASE_URL"] = url
            env["COCOD_STATE_DIR"] = str(self.work / "cocod-state")
        else:
            env["COCOINDEX_DATABASE_URL"] = self.pg.sqlx_url(f"bench_{engine}")
            env["COCOINDEX_DISABLE_USAGE_TRACKING"] = "true"
        cmd = [python, str(WORKER), op, "--engine", engine, "--db-url", url, "--flow", flow]
        cmd += ["--table", table, "--source", str(source), *extra]
        t0 = time.perf_counter()
        res = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=self.args.step_timeout
        )
        wall = time.perf_counter() - t0
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
        if res.returncode != 0 or not lines:
            tail = "\n".join((res.stdout + res.stderr).splitlines()[-30:])
            raise RuntimeError(f"{engine} {op} {flow} failed (exit {res.returncode}):\n{tail}")
        out = json.loads(lines[-1][len("RESULT ") :])
        out["process_s"] = wall
        return out
