"""The embedded PostgreSQL: private socket, untouched folders, and who stops it.

Every test starts its own server in its own state directory (never the session's shared
test server), with real processes: subprocesses that start, are SIGKILLed, and exit.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocod.storage.embedded import start_embedded_postgres
from cocod.storage.embedded_proc import is_postmaster, read_postmaster, wait_until
from cocod.storage.embedded_user import SOCKET_NAME, ServerUser, server_user

is_root = os.geteuid() == 0
needs_root = pytest.mark.skipif(not is_root, reason="checks what other users can reach")
NOBODY = 65534

_CHILD = """
import sys
from pathlib import Path
from cocod.storage.embedded import start_embedded_postgres
server = start_embedded_postgres(Path(sys.argv[1]))
print("PID", server.postmaster_pid, flush=True)
if sys.argv[2] == "wait":
    sys.stdin.read()  # until the test closes our stdin (or kills us)
server.stop()
"""


def _start_child(state_dir: Path, mode: str) -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(state_dir), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("PID "):
            return child, int(line.split()[1])
    raise AssertionError(f"the child could not start the server (rc={child.wait()})")


def _postmaster_gone(pgdata: Path, pid: int) -> bool:
    return wait_until(lambda: not is_postmaster(pid, pgdata), 15.0)


@pytest.fixture
def private_root() -> Iterator[Path]:
    """A 0700 folder whose modes the server must leave alone, with a long path below it
    so the socket cannot live in the state directory."""
    with tempfile.TemporaryDirectory(prefix="cocod-embedded-") as tmp:
        root = Path(tmp)
        root.chmod(0o700)
        yield root


def _modes(path: Path, stop: Path) -> dict[Path, int]:
    modes = {}
    while True:
        modes[path] = stat.S_IMODE(path.stat().st_mode)
        if path == stop:
            return modes
        path = path.parent


def _as_user(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


def _connects_as(uid: int, socket_path: Path) -> subprocess.CompletedProcess[str]:
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except OSError as e:\n"
        "    print(type(e).__name__); sys.exit(3)\n"
        "print('connected')\n"
    )
    return subprocess.run(
        [*_as_user(uid), sys.executable, "-I", "-c", probe, str(socket_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_root
def test_as_root_the_socket_is_private_and_no_parent_folder_is_widened(
    private_root: Path,
) -> None:
    state_dir = private_root / ("deep-" * 12) / "state"
    state_dir.mkdir(parents=True, mode=0o700)
    (private_root / ("deep-" * 12)).chmod(0o700)
    before = _modes(state_dir, private_root)
    server = start_embedded_postgres(state_dir)
    try:
        user = server_user()
        assert user.is_other and user.uid != 0
        socket_dir = server.socket_dir
        st = socket_dir.stat()
        assert stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
        assert st.st_uid == user.uid
        assert len(os.fsencode(socket_dir / SOCKET_NAME)) <= 107
        for parent in socket_dir.parents:
            assert not parent.stat().st_mode & stat.S_IWOTH or parent.stat().st_mode & 0o1000
        socket_path = socket_dir / SOCKET_NAME
        assert socket_path.is_socket()

        refused = _connects_as(NOBODY, socket_path)
        assert refused.returncode == 3 and "PermissionError" in refused.stdout, refused

        assert _modes(state_dir, private_root) == before
        pgdata = stat.S_IMODE(server.data_dir.stat().st_mode)
        assert pgdata == 0o700
    finally:
        server.stop()
    assert server.postmaster_pid is None
    assert not socket_dir.exists(), "an empty runtime folder is removed with its server"


@needs_root
@pytest.mark.parametrize("is_long", [False, True], ids=["short-path", "long-path"])
def test_as_an_ordinary_user_the_socket_dir_is_private(is_long: bool) -> None:
    """As the user itself: ``<state_dir>/run`` when it fits, else a 0700 runtime folder."""
    with tempfile.TemporaryDirectory(prefix="cocod-user-") as tmp:
        home = Path(tmp)
        home.chmod(0o755)
        state_dir = home / ("long-" * 16 if is_long else "") / "state"
        state_dir.parent.mkdir(exist_ok=True, mode=0o755)
        state_dir.mkdir(mode=0o700)
        os.chown(state_dir, NOBODY, NOBODY)
        script = (
            "import os, stat, sys\n"
            "from pathlib import Path\n"
            "from cocod.storage.embedded import start_embedded_postgres\n"
            "s = start_embedded_postgres(Path(sys.argv[1]))\n"
            "st = s.socket_dir.stat()\n"
            "pid = s.postmaster_pid\n"
            "s.stop()\n"
            "print('RESULT', s.socket_dir, oct(stat.S_IMODE(st.st_mode)), st.st_uid, pid,"
            " s.postmaster_pid)\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
        env["HOME"] = tmp
        result = subprocess.run(
            [*_as_user(NOBODY), sys.executable, "-c", script, str(state_dir)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp,
        )
        assert result.returncode == 0, result.stderr
        line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
        _, socket_dir, mode, uid, pid, after_stop = line.split()
        if is_long:
            base = Path("/tmp") / f"cocod-{NOBODY}"
            assert Path(socket_dir).parent == base, socket_dir
            st = base.stat()
            assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, NOBODY)
        else:
            assert Path(socket_dir) == state_dir / "run"
        assert (mode, int(uid)) == ("0o700", NOBODY)
        assert int(pid) > 0 and after_stop == "None"
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700


def test_a_sigkilled_user_does_not_keep_the_server_running(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    a, postmaster = _start_child(state_dir, "wait")
    a.kill()  # SIGKILL: no chance to release its hold
    a.wait(timeout=30)
    pgdata = (state_dir / "pgdata").resolve()
    assert is_postmaster(postmaster, pgdata), "the server outlived A, as it should for now"

    b, attached = _start_child(state_dir, "exit")
    assert b.wait(timeout=60) == 0
    assert attached == postmaster
    assert _postmaster_gone(pgdata, postmaster), "B was the last live user: it must stop it"
    assert read_postmaster(pgdata) is None


def test_the_last_live_user_stops_the_server_not_an_earlier_one(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    a, postmaster = _start_child(state_dir, "wait")
    b, attached = _start_child(state_dir, "exit")
    assert b.wait(timeout=60) == 0 and attached == postmaster
    pgdata = (state_dir / "pgdata").resolve()
    assert is_postmaster(postmaster, pgdata), "A still uses it"
    assert a.stdin is not None
    a.stdin.close()
    assert a.wait(timeout=60) == 0
    assert _postmaster_gone(pgdata, postmaster)


def test_a_killed_postmaster_is_restarted_on_request(tmp_path: Path) -> None:
    server = start_embedded_postgres(tmp_path / "state")
    try:
        pid = server.postmaster_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert _postmaster_gone(server.data_dir, pid)
        assert server.is_running() is False
        assert server.ensure_running() is True
        new_pid = server.postmaster_pid
        assert new_pid is not None and new_pid != pid
        assert server.ensure_running() is False  # running: nothing to do
    finally:
        server.stop()


def test_server_user_is_the_current_user_unless_root() -> None:
    user = server_user()
    assert isinstance(user, ServerUser)
    assert user.is_other == is_root
    if not is_root:
        assert user.uid == os.geteuid()


def test_two_holds_in_one_process_share_one_entry_and_the_last_stops_it(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    first = start_embedded_postgres(state_dir)
    second = start_embedded_postgres(state_dir)
    pid = first.postmaster_pid
    assert pid is not None and second.postmaster_pid == pid
    first.stop()
    first.stop()  # idempotent: must not release the second hold
    assert second.is_running(), "the second hold still needs it"
    second.stop()
    assert _postmaster_gone(second.data_dir, pid)
