"""How fast the CLI answers: `cocod status` and `cocod ping` against an idle daemon.

Starts `cocod serve` on a temporary config with --instances live instances (tiny flows on
small folders, a fresh embedded Postgres), waits until all are watching, then runs the
real CLI as a subprocess --runs times per command and prints p50/max wall time. This is
what a person (or a shell prompt integration) waits for.

Run: .venv/bin/python bench/status_latency.py [--instances 5] [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COCOD = [str(Path(sys.executable).parent / "cocod")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cocod-status-bench-"))
    config = []
    for i in range(args.instances):
        folder = work / f"docs{i}"
        folder.mkdir()
        for j in range(20):
            (folder / f"f{j}.md").write_text(f"document {j} of folder {i}\n\nsecond paragraph")
        config.append(
            f'[flows.i{i}]\ndefinition = "tests.daemon.flows:factory"\n'
            f'[flows.i{i}.params]\nsource_path = "{folder}"\ntable = "bench_rows_{i}"\n'
        )
    (work / "config.toml").write_text("\n".join(config))
    env = {
        **os.environ,
        "COCOD_STATE_DIR": str(work / "state"),
        "COCOD_SOCKET": str(work / "cocod.sock"),
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("COCOD_DATABASE_URL", None)
    daemon = subprocess.Popen(
        [*COCOD, "serve", "--config", str(work / "config.toml")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([*COCOD, "ping"], env=env, capture_output=True).returncode:
            if time.monotonic() > deadline:
                raise SystemExit("the daemon did not start")
            time.sleep(0.2)
        while time.monotonic() < deadline:
            result = subprocess.run([*COCOD, "ls", "--json"], env=env, capture_output=True)
            if result.returncode == 0 and all(
                r["state"] == "WATCHING" for r in json.loads(result.stdout)
            ):
                break
            time.sleep(0.2)
        time.sleep(1.0)
        print(f"daemon idle with {args.instances} live instances (load {os.getloadavg()[0]:.2f})")
        for command in (["ping"], ["status"], ["status", "--json"]):
            samples = []
            for _ in range(args.runs):
                start = time.perf_counter()
                subprocess.run([*COCOD, *command], env=env, capture_output=True, check=True)
                samples.append((time.perf_counter() - start) * 1000)
            print(
                f"cocod {' '.join(command):<14} p50 {statistics.median(samples):6.1f} ms"
                f"   max {max(samples):6.1f} ms   (n={len(samples)}, whole process)"
            )
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
