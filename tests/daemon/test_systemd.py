"""The daemon as a systemd citizen: sd_notify sequence, watchdog, socket activation, units."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cocod.control.client import ControlClient
from tests.conftest import write
from tests.daemon.harness import COCOD, ROOT, DaemonProcess, eventually, instance


class NotifyListener:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))
        return [m for _, m in self.messages]

    def wait_for(self, key: str, value: str | None = None, timeout: float = 30) -> dict[str, str]:
        def found() -> dict[str, str] | None:
            for message in self.drain():
                if key in message and (value is None or message[key] == value):
                    return message
            return None

        return eventually(found, f"{key}={value or '*'}", timeout)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.sock.close()


def test_notify_sequence_ready_status_watchdog_reload_stopping(
    tmp_path: Path, database_url: str
) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "hello")
    listener = NotifyListener(tmp_path / "notify.sock")
    daemon = DaemonProcess(tmp_path, database_url, instance("one", docs, "one_rows"))
    daemon.env["NOTIFY_SOCKET"] = str(listener.path)
    daemon.env["WATCHDOG_USEC"] = "400000"  # a ping expected every 0.2 s
    try:
        daemon.start()
        ready = listener.wait_for("READY", "1")
        assert "STATUS" in ready
        # READY only after the socket is bound: the CLI answered before we looked.
        listener.wait_for("STATUS")
        eventually(lambda: daemon.state("one") == "WATCHING", "watching")
        status = listener.wait_for("STATUS", "watching 1 flows")
        assert status["STATUS"] == "watching 1 flows"

        listener.drain()
        window_start = time.monotonic()
        time.sleep(3.0)
        listener.drain()
        pings = [t for t, m in listener.messages if m.get("WATCHDOG") == "1" and t >= window_start]
        # About 15 expected; the bounds only catch "never" and "in a tight loop".
        assert 3 <= len(pings) <= 40, f"{len(pings)} watchdog pings in 3 s at a 0.2 s interval"

        daemon.signal(signal.SIGHUP)
        reloading = listener.wait_for("RELOADING", "1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        listener.wait_for("READY", "1")

        daemon.signal(signal.SIGTERM)
        listener.wait_for("STOPPING", "1")
        # One SIGTERM, as systemd sends: the drain runs to its end and the exit is clean
        # (daemon.stop() would signal again while the loop tears down).
        assert daemon.process is not None
        assert daemon.process.wait(timeout=30) == 0
    finally:
        daemon.stop()
        listener.close()


def test_socket_activation_serves_the_inherited_socket(tmp_path: Path, database_url: str) -> None:
    docs = tmp_path / "docs"
    write(docs / "a.md", "activated")
    path = tmp_path / "activated.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    daemon = DaemonProcess(tmp_path, database_url, instance("act", docs, "act_rows"))
    daemon.env["COCOD_SOCKET"] = str(tmp_path / "not-this-one.sock")
    fd = server.fileno()
    # The shell puts our socket on fd 3 and names itself (then the daemon) in LISTEN_PID.
    script = f'exec 3<&{fd}; export LISTEN_FDS=1 LISTEN_PID=$$; exec "$@"'
    process = subprocess.Popen(
        ["/bin/bash", "-c", script, "bash", *COCOD, "serve", "--config", str(daemon.config)],
        env=daemon.env,
        cwd=tmp_path,
        pass_fds=(fd,),
        stdout=daemon.log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    server.close()
    try:
        client = ControlClient(path)
        eventually(lambda: client.call("ping")["pong"], "the daemon on the inherited socket")
        assert not (tmp_path / "not-this-one.sock").exists()
        eventually(lambda: client.call("status", {"name": "act"})[0]["state"] == "WATCHING", "up")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert path.exists(), "the socket belongs to systemd: the daemon must not remove it"


def _unit_copy(tmp_path: Path, relative: str, venv_cocod: str) -> Path:
    text = (ROOT / "systemd" / relative).read_text()
    text = text.replace("/opt/cocod/.venv/bin/cocod", venv_cocod)
    text = text.replace("%h/.local/share/cocod/venv/bin/cocod", venv_cocod)
    target = tmp_path / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    return target


def test_unit_files_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (install the systemd package)")
    cocod_bin = str(Path(sys.executable).parent / "cocod")
    if not os.access(cocod_bin, os.X_OK):
        cocod_bin = "/bin/true"  # verify checks that ExecStart is executable
    system = [_unit_copy(tmp_path, u, cocod_bin) for u in ("cocod.socket", "cocod.service")]
    result = subprocess.run(
        [tool, "verify", "--man=no", *map(str, system)], capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    user = [_unit_copy(tmp_path, u, cocod_bin) for u in ("user/cocod.service", "user/cocod.socket")]
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        [tool, "--user", "verify", "--man=no", *map(str, user)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
    )
    if result.returncode != 0 and "Failed to initialize manager" in result.stderr:
        pytest.skip(f"no user manager can be simulated here: {result.stderr.strip()}")
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
