"""Run the real daemon as a subprocess and drive it through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COCOD = [sys.executable, "-m", "cocod.cli.main"]


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, KeyError, IndexError, TypeError) as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class DaemonProcess:
    def __init__(self, workdir: Path, database_url: str, config_text: str) -> None:
        self.workdir = workdir
        self.config = workdir / "config.toml"
        self.config.write_text(config_text)
        self.socket = workdir / "cocod.sock"
        self.log = workdir / "daemon.log"
        self.env = {
            **os.environ,
            "COCOD_DATABASE_URL": database_url,
            "COCOD_SOCKET": str(self.socket),
            "COCOD_STATE_DIR": str(workdir / "state"),
            "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            [*COCOD, "serve", "--config", str(self.config)],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        eventually(lambda: self.cli("ping", check=False).returncode == 0, "the daemon to answer")
        return self

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*COCOD, *args], env=self.env, cwd=self.workdir, capture_output=True, text=True
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"cocod {' '.join(args)} failed ({result.returncode}): {result.stderr}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def state(self, name: str) -> str:
        (status,) = self.json("status", name)
        return str(status["state"])

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""
