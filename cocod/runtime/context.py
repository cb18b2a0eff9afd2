"""The library context: settings, the database (embedded or configured) and the pool.

Created lazily on first need, like v0: defining and opening flows does no I/O; the first
setup/update connects. ``init(settings)`` replaces the settings; ``stop()`` tears it down.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import warnings
from collections.abc import Callable

import structlog

from cocod.errors import SettingsError
from cocod.flow.naming import validate_app_namespace, validate_sql_identifier
from cocod.runtime.bridge import bridge
from cocod.settings import Settings, default_state_dir
from cocod.storage.embedded import EmbeddedPostgres, start_embedded_postgres
from cocod.storage.pool import Pool, open_pool

log = structlog.get_logger(__name__)

DEFAULT_INTERNAL_SCHEMA = "cocod"


class LibraryContext:
    def __init__(self, settings: Settings) -> None:
        if settings.app_namespace:
            validate_app_namespace(settings.app_namespace)
        self.settings = settings
        self.schema = validate_sql_identifier(
            settings.db_schema_name or DEFAULT_INTERNAL_SCHEMA, "internal schema name"
        ).lower()
        self._pool: Pool | None = None
        self._pool_lock: asyncio.Lock | None = None
        self._embedded: EmbeddedPostgres | None = None

    @property
    def database_url(self) -> str:
        db = self.settings.database
        if db is not None:
            return _with_credentials(db.url, db.user, db.password)
        if self._embedded is None:
            state_dir = self.settings.state_dir or default_state_dir()
            self._embedded = start_embedded_postgres(state_dir)
            # Registered after the server's own exit hook, so it runs first: the pool
            # closes while the server is still up.
            atexit.register(stop)
        return self._embedded.uri

    async def pool(self) -> Pool:
        if self._pool is None:
            if self._pool_lock is None:
                self._pool_lock = asyncio.Lock()
            async with self._pool_lock:
                if self._pool is None:
                    db = self.settings.database
                    max_size = db.max_connections if db else 10
                    min_size = min(db.min_connections if db else 1, max_size)
                    url = self.database_url
                    self._pool = await open_pool(url, min_size=min_size, max_size=max_size)
        return self._pool

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def close(self) -> None:
        if self._pool is not None:
            try:
                bridge.run(self.aclose())
            except Exception as e:  # closing is best effort at exit
                log.debug("context.close_failed", error=str(e))
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None


def _with_credentials(url: str, user: str | None, password: str | None) -> str:
    if not user or "://" not in url or "@" in url:
        return url
    scheme, rest = url.split("://", 1)
    creds = user if password is None else f"{user}:{password}"
    return f"{scheme}://{creds}@{rest}"


_lock = threading.Lock()
_context: LibraryContext | None = None
_settings_fn: Callable[[], Settings] | None = None


def settings(fn: Callable[[], Settings]) -> Callable[[], Settings]:
    """Decorator: register the function that provides settings (v0's ``@cocoindex.settings``)."""
    global _settings_fn
    if _settings_fn is not None:
        warnings.warn(
            "a second @cocod.settings function replaces the first", UserWarning, stacklevel=2
        )
    _settings_fn = fn
    return fn


def init(settings: Settings | None = None) -> None:
    """(Re)initialise the library with explicit settings, the registered function, or env."""
    global _context
    if settings is None:
        settings = _settings_fn() if _settings_fn is not None else Settings.from_env()
    if not isinstance(settings, Settings):
        raise SettingsError(f"init() expects a cocod.Settings, got {type(settings).__name__}")
    _quiet_logging_by_default()
    with _lock:
        old, _context = _context, LibraryContext(settings)
    if old is not None:
        old.close()


def get_context() -> LibraryContext:
    global _context
    with _lock:
        if _context is None:
            _quiet_logging_by_default()
            s = _settings_fn() if _settings_fn is not None else Settings.from_env()
            _context = LibraryContext(s)
        return _context


def _quiet_logging_by_default() -> None:
    """Plain scripts see warnings and errors only, unless the application configured logging."""
    if not structlog.is_configured():
        from cocod.logs import configure_logging

        configure_logging("warning")


def stop() -> None:
    """Close the pool and release the embedded server; flows may be reopened after init()."""
    global _context
    with _lock:
        ctx, _context = _context, None
    if ctx is not None:
        ctx.close()
    from cocod.runtime.coordination import reset_coordination

    reset_coordination()


def get_app_namespace(*, trailing_delimiter: str | None = None) -> str:
    ns = get_context().settings.app_namespace
    if ns and trailing_delimiter:
        return ns + trailing_delimiter
    return ns


atexit.register(stop)
