"""Run the real daemon as a subprocess and drive it through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
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


def instance(
    name: str,
    folder: Path,
    table: str,
    live: bool = True,
    fail: bool = False,
    definition: str = "tests.daemon.flows:factory",
) -> str:
    """A ``[flows.NAME]`` section of config.toml for the paragraph flow over ``folder``."""
    return (
        f'[flows.{name}]\ndefinition = "{definition}"\n'
        f"live = {'true' if live else 'false'}\n"
        f'[flows.{name}.params]\nsource_path = "{folder}"\ntable = "{table}"\n'
        + ("fail = true\n" if fail else "")
    )


class DaemonProcess:
    """``cocod serve`` in ``workdir``; with ``database_url=None`` it starts its own
    embedded Postgres in ``workdir/state/pgdata`` (as it does for a user)."""

    def __init__(self, workdir: Path, database_url: str | None, config_text: str) -> None:
        self.workdir = workdir
        self.config = workdir / "config.toml"
        self.config.write_text(config_text)
        self.socket = workdir / "cocod.sock"
        self.log = workdir / "daemon.log"
        self.state_dir = workdir / "state"
        self.env = {
            **os.environ,
            "COCOD_SOCKET": str(self.socket),
            "COCOD_STATE_DIR": str(self.state_dir),
            "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1",
        }
        self.env.pop("COCOD_DATABASE_URL", None)
        if database_url is not None:
            self.env["COCOD_DATABASE_URL"] = database_url
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        self.spawn()
        eventually(lambda: self.cli("ping", check=False).returncode == 0, "the daemon to answer")
        return self

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process and return at once (it may not answer yet)."""
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            [*COCOD, "serve", "--config", str(self.config)],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self.process

    def wait_for_log(self, text: str, timeout: float = 30.0, after: int = 0) -> int:
        """Until ``text`` appears in the log past offset ``after``; returns its offset."""

        def found() -> int | None:
            at = self.logs().find(text, after)
            return at + 1 if at >= 0 else None

        return int(eventually(found, f"{text!r} in the daemon log", timeout)) - 1

    def request(self, cmd: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
        """One request over the socket, without a CLI process in between (for timing)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.socket))
            sock.sendall(json.dumps({"id": 1, "cmd": cmd, "args": args}).encode() + b"\n")
            buffer = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise AssertionError(f"the daemon closed the connection during {cmd!r}")
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    message: dict[str, Any] = json.loads(line)
                    if "ok" in message:
                        return message

    def postmaster_pid(self) -> int:
        """The pid of the daemon's own embedded Postgres (from its postmaster.pid)."""
        pid_file = self.state_dir / "pgdata" / "postmaster.pid"
        return int(pid_file.read_text().split("\n", 1)[0])

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

    def log_events(self, event: str, name: str) -> list[dict[str, Any]]:
        """The daemon's JSON log records of ``event`` for instance ``name``, in order."""
        out = []
        for line in self.logs().splitlines():
            if event not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("event") != event:
                continue
            if record.get("instance") == name:
                out.append(record)
        return out
