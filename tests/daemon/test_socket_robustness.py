"""Garbage on the control socket never disturbs the daemon or other clients."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocod.control.client import ControlClient
from cocod.control.protocol import MAX_LINE_BYTES
from tests.conftest import SqlHelper, write
from tests.daemon.harness import DaemonProcess, eventually
from tests.daemon.test_daemon_e2e import instance, texts


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: object
) -> Iterator[tuple[DaemonProcess, Path, str]]:
    from tests.conftest import _admin, _url_for

    workdir = tmp_path_factory.mktemp("fuzz")
    _admin(postgres_server, 'CREATE DATABASE "fuzz_daemon"')  # type: ignore[arg-type]
    url = _url_for(postgres_server, "fuzz_daemon")  # type: ignore[arg-type]
    docs = workdir / "docs"
    write(docs / "a.md", "first")
    process = DaemonProcess(workdir, url, instance("fuzzed", docs, "fuzz_rows"))
    # A socket folder others may traverse, so only the socket's own mode keeps them out.
    public = Path(tempfile.mkdtemp(prefix="cocod-sock-"))
    public.chmod(0o755)
    process.socket = public / "cocod.sock"
    process.env["COCOD_SOCKET"] = str(process.socket)
    process.start()
    eventually(lambda: process.state("fuzzed") == "WATCHING", "the instance to watch")
    yield process, docs, url
    process.stop()
    shutil.rmtree(public, ignore_errors=True)
    _admin(postgres_server, 'DROP DATABASE IF EXISTS "fuzz_daemon" WITH (FORCE)')  # type: ignore[arg-type]


def _raw(path: Path, payload: bytes, read: bool = True) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while read:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_malformed_requests_get_error_replies(running: tuple[DaemonProcess, Path, str]) -> None:
    daemon, _, _ = running
    cases = {
        b"{not json\n": "bad_json",
        b"[1, 2]\n": "bad_request",
        b'{"id": 1}\n': "bad_request",
        b'{"id": 2, "cmd": "explode"}\n': "unknown_command",
        b'{"id": 3, "cmd": "status", "args": {"name": 7}}\n': "bad_args",
        b'{"id": 4, "cmd": "status", "args": {"nope": 1}}\n': "bad_args",
        b'{"id": 5, "cmd": "open", "args": {}}\n': "bad_args",
        b'{"id": 6, "cmd": "open", "args": {"name": "missing"}}\n': "unknown_flow",
        b"\xff\xfe\x00garbage\n": "bad_json",
    }
    for payload, code in cases.items():
        reply = json.loads(_raw(daemon.socket, payload).splitlines()[0])
        assert reply["ok"] is False and reply["error"]["code"] == code, (payload, reply)
    # Several requests on one connection, the bad one in the middle, all answered.
    lines = _raw(
        daemon.socket,
        b'{"id": 1, "cmd": "ping"}\n{oops\n{"id": 3, "cmd": "ping"}\n',
    ).splitlines()
    assert [json.loads(line).get("ok") for line in lines] == [True, False, True]


def test_oversize_line_is_refused_and_connection_closed(
    running: tuple[DaemonProcess, Path, str],
) -> None:
    daemon, _, _ = running
    huge = b'{"id": 1, "cmd": "ping", "args": {"x": "' + b"a" * (MAX_LINE_BYTES + 10) + b'"}}\n'
    try:
        reply = _raw(daemon.socket, huge)
    except (BrokenPipeError, ConnectionResetError):
        reply = b""  # the daemon may close before reading everything we send
    if reply:
        assert json.loads(reply.splitlines()[0])["error"]["code"] == "too_large"
    assert ControlClient(daemon.socket).call("ping")["pong"] is True


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    payload=st.one_of(
        st.binary(max_size=2048),
        st.text(max_size=512).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.sampled_from(["id", "cmd", "args", "name"]), inner, max_size=4)
            ),
            max_leaves=10,
        ).map(lambda v: json.dumps(v).encode()),
    ),
    cut=st.integers(min_value=0, max_value=64),
    newline=st.booleans(),
)
def test_fuzzed_bytes_never_break_the_daemon(
    running: tuple[DaemonProcess, Path, str], payload: bytes, cut: int, newline: bool
) -> None:
    daemon, _, _ = running
    data = payload[: max(0, len(payload) - cut)] + (b"\n" if newline else b"")
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        _raw(daemon.socket, data, read=newline)


def test_daemon_still_serves_and_indexes_after_abuse(
    running: tuple[DaemonProcess, Path, str],
) -> None:
    daemon, docs, url = running
    # Many half-open connections at once: some send half a request and hang up.
    sockets = []
    for i in range(50):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(daemon.socket))
        s.sendall(b'{"id": 1, "cmd": "sta' if i % 2 else b"")
        sockets.append(s)
    assert ControlClient(daemon.socket).call("ping")["pong"] is True
    for s in sockets:
        s.close()
    status = ControlClient(daemon.socket).call("status", {"name": "fuzzed"})
    assert status[0]["state"] == "WATCHING"
    write(docs / "after.md", "indexed after the abuse")
    eventually(lambda: "indexed after the abuse" in texts(SqlHelper(url), "fuzz_rows"), "indexing")
    assert daemon.process is not None and daemon.process.poll() is None


def test_socket_is_private_to_its_owner(running: tuple[DaemonProcess, Path, str]) -> None:
    daemon, _, _ = running
    assert (daemon.socket.stat().st_mode & 0o777) == 0o600
    if os.geteuid() != 0:
        pytest.skip("needs root to run a probe as another user")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user on this machine")
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    sys.exit(13)\n"
        "sys.exit(0)\n"
    )
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None:
        pytest.skip("no system python3 that another user can run")

    def probe_as_nobody() -> int:
        return subprocess.run(
            [system_python, "-c", probe, str(daemon.socket)],
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            capture_output=True,
        ).returncode

    assert probe_as_nobody() == 13, "another user must not reach a 0600 socket"
    daemon.socket.chmod(0o666)  # the control: with the mode opened, the same probe connects
    try:
        assert probe_as_nobody() == 0
    finally:
        daemon.socket.chmod(0o600)


def test_cli_without_daemon_says_so_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cocod.cli.main", "status", "--socket", str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "no cocod daemon answers" in result.stderr


def test_cli_client_imports_neither_asyncpg_nor_torch(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from cocod.cli.main import main\n"
        "code = main(['status', '--socket', sys.argv[1]])\n"
        "heavy = [m for m in ('asyncpg', 'torch', 'sentence_transformers', 'numpy')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "none")], capture_output=True, text=True
    )
    assert result.stdout.strip() == "", f"the CLI client imported {result.stdout.strip()}"
    assert shutil.which("python3") is not None


def test_cli_prints_error_replies_as_one_line_with_their_code(
    running: tuple[DaemonProcess, Path, str],
) -> None:
    daemon, _, _ = running
    for args, code in (
        (("query", "fuzzed", "text", "--top", "-1"), "bad_args"),
        (("open", "no_such_instance"), "unknown_flow"),
        (("add", "bad name!", "mod:factory"), "bad_args"),
    ):
        result = daemon.cli(*args, check=False)
        assert result.returncode == 1, result
        assert result.stderr.startswith(f"cocod: {code}: "), result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    as_json = daemon.cli("open", "no_such_instance", "--json", check=False)
    assert json.loads(as_json.stdout)["error"]["code"] == "unknown_flow"
