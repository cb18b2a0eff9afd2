"""A fresh `cocod update` of an unchanged app, whole process, with and without the CLI's
two start-up measures, alternating in one run.

Why: a one-shot update from cron or a shell is mostly start-up. `cocod.cli.main` imports
structlog with rich hidden from it (structlog.dev would load rich and pygments for
tracebacks cocod never renders) and freezes what it imported before the command runs (the
first full collection otherwise walks every module object). This runs the real CLI
entry point (`cocod.cli.main.main`) in fresh interpreters, three ways, one sample of each
per round, so that a drifting machine shifts every row alike:

* lean: as shipped;
* no freeze: ``gc.freeze`` replaced by a no-op;
* neither: structlog imported first, with rich visible, and no freeze.

It starts its own embedded Postgres in a temporary folder, writes the two-file app of
``tests/cli/apps.py``, updates once, then measures. Prints wall and CPU time (the child's
user + sys) per variant.

    .venv/bin/python bench/cli_startup.py [--rounds 12]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from setup_db import BenchPostgres  # noqa: E402

from tests.cli.apps import clean_env, write_app  # noqa: E402

RUN = "from cocod.cli.main import main\nraise SystemExit(main(['update', '-f', '-q', 'main']))\n"
VARIANTS = {
    "lean (as shipped)": RUN,
    "no freeze": "import gc\ngc.freeze = lambda: None\n" + RUN,
    "neither (rich visible, no freeze)": "import gc, structlog\ngc.freeze = lambda: None\n" + RUN,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=12)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cocod-cli-startup-"))
    pg = BenchPostgres(work / "pg")
    try:
        pg.create_database("startup")
        app = work / "app"
        write_app(app, flow="StartupFlow")
        env = clean_env(
            COCOINDEX_DATABASE_URL=pg.url("startup"), COCOD_SOCKET=str(work / "none.sock")
        )

        def run(code: str) -> tuple[float, float]:
            c0, t0 = os.times(), time.perf_counter()
            r = subprocess.run(
                [sys.executable, "-c", code], cwd=app, env=env, capture_output=True, text=True
            )
            wall, c1 = time.perf_counter() - t0, os.times()
            if r.returncode != 0:
                raise SystemExit(f"update failed ({r.returncode}):\n{r.stderr[-2000:]}")
            cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
            return wall, cpu

        for code in VARIANTS.values():  # the first update indexes; then each is a no-op
            run(code)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, code in VARIANTS.items():
                samples[name].append(run(code))
        print(f"fresh `cocod update` of an unchanged two-file app, {args.rounds} rounds")
        print("| variant | wall p50 | CPU p50 |\n|---|---:|---:|")
        for name, rows in samples.items():
            wall = statistics.median(w for w, _ in rows) * 1000
            cpu = statistics.median(c for _, c in rows) * 1000
            print(f"| {name} | {wall:.0f} ms | {cpu:.0f} ms |")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
