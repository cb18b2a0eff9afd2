"""Typed settings: CocoIndex-v0-compatible ``Settings`` plus cocod's own knobs.

Resolution order for every value: explicit argument → ``COCOD_*`` environment variable →
``COCOINDEX_*`` environment variable (v0 compatibility) → default. Parsed once at the entry
point (``init()``, the CLI, the daemon) and passed down; nothing below reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cocod.errors import SettingsError


@dataclass
class DatabaseConnectionSpec:
    """Where the internal state (and, by default, the targets) live.

    ``max_connections`` bounds the pool. ``min_connections`` is kept for v0's settings
    (and ``COCOINDEX_DATABASE_MIN_CONNECTIONS``) but opens nothing up front: the pool
    opens one connection at start and grows on demand, because a one-shot update in a
    fresh process would otherwise pay for connections it never uses.
    """

    url: str
    user: str | None = None
    password: str | None = None
    max_connections: int = 25
    min_connections: int = 5


@dataclass
class GlobalExecutionOptions:
    """Admission budget shared by every source of every flow in the process."""

    source_max_inflight_rows: int | None = 1024
    source_max_inflight_bytes: int | None = None


@dataclass
class Settings:
    """Process-wide settings, field-compatible with CocoIndex v0's ``cocoindex.Settings``.

    ``database=None`` means "no URL configured": cocod then starts the embedded Postgres
    under ``state_dir`` instead of failing like v0 did. ``state_dir`` (``COCOD_STATE_DIR``,
    default :func:`default_state_dir`) then holds ``pgdata/`` (the cluster), ``run/`` (its
    0700 socket directory, when the path is short enough; otherwise a private runtime
    directory is used), ``pgdata.lock`` and ``pgdata.users.json``; cocod never changes the
    permissions of the folders above it (see ``cocod.storage.embedded``).
    """

    ignore_target_drop_failures: bool = False
    database: DatabaseConnectionSpec | None = None
    db_schema_name: str | None = None
    app_namespace: str = ""
    global_execution_options: GlobalExecutionOptions | None = None
    state_dir: Path | None = None
    memo_retention_seconds: float = 3600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``COCOD_*`` / ``COCOINDEX_*`` environment variables."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            return env.get(f"COCOD_{name}") or env.get(f"COCOINDEX_{name}") or None

        def get_int(name: str) -> int | None:
            raw = get(name)
            if raw is None:
                return None
            try:
                return int(raw)
            except ValueError:
                raise SettingsError(
                    f"failed to parse environment variable COCOD_{name}/COCOINDEX_{name}: "
                    f"{raw!r} is not an integer"
                ) from None

        database: DatabaseConnectionSpec | None = None
        url = get("DATABASE_URL")
        if url:
            database = DatabaseConnectionSpec(
                url=url, user=get("DATABASE_USER"), password=get("DATABASE_PASSWORD")
            )
            if (n := get_int("DATABASE_MAX_CONNECTIONS")) is not None:
                database.max_connections = n
            if (n := get_int("DATABASE_MIN_CONNECTIONS")) is not None:
                database.min_connections = n
        options = GlobalExecutionOptions()
        if (n := get_int("SOURCE_MAX_INFLIGHT_ROWS")) is not None:
            options.source_max_inflight_rows = n
        options.source_max_inflight_bytes = get_int("SOURCE_MAX_INFLIGHT_BYTES")
        state_dir = get("STATE_DIR")
        retention = get("MEMO_RETENTION_SECONDS")
        return cls(
            ignore_target_drop_failures=(get("IGNORE_TARGET_DROP_FAILURES") or "").lower()
            == "true",
            database=database,
            db_schema_name=get("DATABASE_SCHEMA_NAME"),
            app_namespace=get("APP_NAMESPACE") or "",
            global_execution_options=options,
            state_dir=Path(state_dir) if state_dir else None,
            memo_retention_seconds=float(retention) if retention else 3600.0,
        )

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$COCOD_STATE_DIR``, else systemd's ``$STATE_DIRECTORY``, else ``$XDG_STATE_HOME/cocod``."""
    env = os.environ if env is None else env
    if explicit := env.get("COCOD_STATE_DIR"):
        return Path(explicit)
    if systemd := env.get("STATE_DIRECTORY"):
        return Path(systemd.split(":")[0])
    xdg = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "cocod"


@dataclass
class ServerSettings:
    """Accepted for v0 compatibility; cocod has no HTTP server (the daemon uses a socket)."""

    address: str = "127.0.0.1:49344"
    cors_origins: list[str] | None = field(default=None)


def get_app_namespace(*, trailing_delimiter: str | None = None) -> str:
    """v0's ``cocoindex.setting.get_app_namespace``: the current app namespace.

    Defined here as in v0 and answered by the library context (imported when called, as
    the context itself imports this module).
    """
    from cocod.runtime.context import get_app_namespace as current

    return current(trailing_delimiter=trailing_delimiter)


def split_app_namespace(full_name: str, delimiter: str) -> tuple[str, str]:
    """Split ``"ns<delimiter>name"`` into ``("ns", "name")``; no delimiter: ``("", full_name)``."""
    namespace, found, name = full_name.partition(delimiter)
    return (namespace, name) if found else ("", full_name)
