"""Process and on-disk bookkeeping for the embedded PostgreSQL (see ``embedded.py``).

Why a module of its own: deciding "is that process still alive, and is it who we think?"
is the part that went wrong before (dead pids kept a server running for ever), so it is
kept small and separately testable: process identity from ``/proc`` (pid plus start time,
zombies count as dead), the postmaster's identity (its working directory is the data
directory), the list of processes using a server, an ``flock`` with a deadline, and the
private directories (created 0700, or checked to be ours and closed to others).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cocod.errors import EmbeddedPostgresError


def process_start(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None when it is gone.

    A zombie (killed but not yet reaped) is gone. Without ``/proc`` the start time is
    unknown (0) and only existence is checked with ``kill(pid, 0)``.
    """
    if pid <= 0:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        return 0 if _exists(pid) else None
    except OSError:
        return 0 if _exists(pid) else None
    fields = raw.rsplit(")", 1)[-1].split()
    # After the command name: state is field 3, start time field 22 (1-based).
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Postmaster:
    """What ``postmaster.pid`` says about a server that is (or was) running."""

    pid: int
    socket_dir: Path | None


def read_postmaster(pgdata: Path) -> Postmaster | None:
    """Parse ``pgdata/postmaster.pid``; None when there is none (or it is half written)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return None
    socket_dir = lines[4].strip() if len(lines) > 4 else ""
    return Postmaster(pid, Path(socket_dir) if socket_dir else None)


def is_postmaster(pid: int, pgdata: Path) -> bool:
    """True when ``pid`` is alive and is a server on ``pgdata``: a postmaster's working
    directory is its data directory, which a stranger that reused the pid cannot fake."""
    if process_start(pid) is None:
        return False
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except FileNotFoundError:
        return False
    except OSError:
        return _exists(pid)  # no /proc access: trust postmaster.pid
    return os.path.realpath(cwd) == os.path.realpath(pgdata)


def processes_in(pgdata: Path) -> list[int]:
    """Live processes whose working directory is ``pgdata``: a server's backends, which
    outlive a killed postmaster for a moment and must be gone before a new one starts."""
    target = os.path.realpath(pgdata)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if cwd == target and process_start(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found


def is_private_socket_dir(path: Path | None, owner: int) -> bool:
    """True when only ``owner`` (and root) can reach sockets in ``path``."""
    if path is None:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == owner and not st.st_mode & 0o077


def wait_until(done: Callable[[], bool], seconds: float) -> bool:
    """Poll ``done`` with capped exponential backoff until it is true or time runs out."""
    deadline = time.monotonic() + seconds
    delay = 0.005
    while True:
        if done():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay * random.uniform(0.5, 1.0), remaining))
        delay = min(delay * 2, 0.25)


@contextlib.contextmanager
def file_lock(path: Path, seconds: float) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created 0600), waiting at most ``seconds``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:

        def acquired() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    return False
                raise
            return True

        if not wait_until(acquired, seconds):
            raise EmbeddedPostgresError(
                f"another cocod process has held {path} for over {seconds:.0f} s while "
                "starting or stopping the embedded PostgreSQL; if none is running, "
                "remove the file and try again"
            )
        yield
    finally:
        os.close(fd)  # closing releases the lock


class UsersFile:
    """The processes using one server, as ``[{"pid": ..., "start": ...}]`` in a JSON file.

    Only read and written with the server's file lock held. Every read drops entries whose
    process is gone or whose pid now belongs to a different (later started) process.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> list[dict[str, int]]:
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        entries = []
        for item in raw if isinstance(raw, list) else []:
            if isinstance(item, dict) and isinstance(item.get("pid"), int):
                entries.append({"pid": item["pid"], "start": int(item.get("start") or 0)})
        return entries

    def _live(self) -> list[dict[str, int]]:
        live = []
        for entry in self._load():
            start = process_start(entry["pid"])
            if start is not None and (entry["start"] in (0, start) or start == 0):
                live.append(entry)
        return live

    def _save(self, entries: list[dict[str, int]]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f)
        os.replace(tmp, self.path)

    def live_pids(self) -> set[int]:
        return {entry["pid"] for entry in self._live()}

    def add(self, pid: int) -> None:
        entries = [e for e in self._live() if e["pid"] != pid]
        entries.append({"pid": pid, "start": process_start(pid) or 0})
        self._save(entries)

    def remove(self, pid: int) -> set[int]:
        """Remove ``pid`` (and the dead); return the live pids that remain."""
        entries = [e for e in self._live() if e["pid"] != pid]
        self._save(entries)
        return {entry["pid"] for entry in entries}


def ensure_private_dir(path: Path, *, mode: int, owner: int) -> Path:
    """Create ``path`` with ``mode`` owned by ``owner``, or check an existing one is that.

    An existing directory that is a symlink, belongs to someone else, or may be written by
    others is refused: it could be a trap laid in a shared folder like ``/tmp``.
    """
    try:
        os.mkdir(path, mode)
        created = True
    except FileExistsError:
        created = False
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise EmbeddedPostgresError(
            f"{path} exists but is not a directory; remove it so cocod can create its "
            "private directory for the embedded PostgreSQL socket"
        )
    if created or st.st_uid in (owner, os.geteuid()):
        if st.st_uid != owner:
            os.chown(path, owner, -1)
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(path, mode)
        return path
    raise EmbeddedPostgresError(
        f"{path} belongs to uid {st.st_uid}, not to the user that runs the embedded "
        f"PostgreSQL (uid {owner}); remove it (it may have been planted) or set "
        "COCOD_STATE_DIR to a shorter path so the socket can live in the state directory"
    )


def runtime_base() -> Path:
    """A private per-user folder for short-lived files, created and checked on demand."""
    uid = os.geteuid()
    if uid == 0:
        run = Path("/run")
        st = os.stat(run) if run.is_dir() else None
        if st is not None and st.st_uid == 0 and not st.st_mode & 0o022:
            # 0711: the server user must traverse it to reach its own socket directory.
            return ensure_private_dir(run / "cocod", mode=0o711, owner=0)
        return ensure_private_dir(Path("/tmp") / "cocod-0", mode=0o711, owner=0)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir() and os.stat(xdg).st_uid == uid:
        return ensure_private_dir(Path(xdg) / "cocod", mode=0o700, owner=uid)
    return ensure_private_dir(Path("/tmp") / f"cocod-{uid}", mode=0o700, owner=uid)
