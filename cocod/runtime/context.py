"""The library context: settings, the database (embedded or configured) and the pool.

Created lazily on first need, like v0: defining and opening flows does no I/O; the first
setup/update connects. ``init(settings)`` replaces the settings; ``stop()`` tears it down.

The database has an explicit lifecycle that a supervisor (the daemon) drives:
``open_database()`` resolves the URL and, for the embedded server, starts or attaches to it
in a worker thread; ``ensure_database_running()`` checks it answers and restarts a dead
embedded server; ``aclose()`` closes the pool within a deadline and releases the embedded
server (a fast shutdown when this was its last user); ``release_embedded_now()`` is the
synchronous last resort of a forced exit.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import overload

import anyio
import anyio.lowlevel
import anyio.to_thread
import asyncpg
import structlog

from cocod.errors import DatabaseError, DatabaseUnavailableError, SettingsError
from cocod.flow.naming import validate_app_namespace, validate_sql_identifier
from cocod.runtime.bridge import bridge
from cocod.setting import Settings, default_state_dir
from cocod.storage.embedded import EmbeddedPostgres, start_embedded_postgres
from cocod.storage.pool import Pool, connect, open_pool, with_credentials

log = structlog.get_logger(__name__)

DEFAULT_INTERNAL_SCHEMA = "cocod"
PROBE_TIMEOUT_SECONDS = 2.0
"""How long ``ensure_database_running()`` waits for an external database to answer."""


class LibraryContext:
    def __init__(self, settings: Settings) -> None:
        if settings.app_namespace:
            validate_app_namespace(settings.app_namespace)
        self.settings = settings
        self.schema = validate_sql_identifier(
            settings.db_schema_name or DEFAULT_INTERNAL_SCHEMA, "internal schema name"
        ).lower()
        self._pool: Pool | None = None
        self._embedded: EmbeddedPostgres | None = None
        self._url: str | None = None
        # The thread lock makes the embedded start happen once whatever thread or loop asks;
        # the anyio locks (one per event loop, since a lock belongs to its loop) keep tasks
        # of one loop from each tying up a worker thread waiting for it.
        self._embedded_lock = threading.Lock()
        self._async_locks: dict[object, tuple[anyio.Lock, anyio.Lock]] = {}
        self._is_database_up: bool | None = None

    # -- the database ------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        """Whether this context has resolved its database (started the embedded server or
        opened the pool): replacing it then would strand what it opened."""
        return self._url is not None or self._pool is not None or self._embedded is not None

    @property
    def embedded_data_dir(self) -> Path:
        """Where the embedded server keeps its cluster (meaningful when ``is_embedded``)."""
        return (self.settings.state_dir or default_state_dir()) / "pgdata"

    @property
    def is_embedded(self) -> bool:
        """True when no URL is configured, so cocod runs its own embedded PostgreSQL."""
        return self.settings.database is None

    @property
    def database_url(self) -> str:
        """The database URL, starting the embedded server if needed (blocks).

        For synchronous callers that are not on an event loop; async code awaits
        :meth:`open_database` instead, which starts the server in a worker thread.
        """
        if self._url is not None:
            return self._url
        if _on_event_loop():
            raise RuntimeError(
                "LibraryContext.database_url would start the embedded PostgreSQL on a "
                "running event loop; await ctx.open_database() instead"
            )
        return self._open_database_blocking()

    def _open_database_blocking(self) -> str:
        db = self.settings.database
        if db is not None:
            self._url = with_credentials(db.url, db.user, db.password)
            return self._url
        with self._embedded_lock:
            if self._embedded is None:
                state_dir = self.settings.state_dir or default_state_dir()
                self._embedded = start_embedded_postgres(state_dir)
                # Registered after the server's own exit hook, so it runs first: the pool
                # closes while the server is still up.
                atexit.register(stop)
            self._url = self._embedded.uri
            return self._url

    def _locks(self) -> tuple[anyio.Lock, anyio.Lock]:
        """(open lock, pool lock) of the running event loop."""
        key: object = id(asyncio.get_running_loop())
        locks = self._async_locks.get(key)
        if locks is None:
            locks = self._async_locks[key] = (anyio.Lock(), anyio.Lock())
        return locks

    async def open_database(self) -> str:
        """Resolve the database URL; for the embedded server, start or attach to it in a
        worker thread. Idempotent; raises EmbeddedPostgresError when it cannot start."""
        if self._url is not None:
            return self._url
        async with self._locks()[0]:
            url = self._url
            if url is None:
                url = await anyio.to_thread.run_sync(self._open_database_blocking)
            if self._url is None:
                # Released while it started: a shutdown (SIGTERM during start-up). Let the
                # pending cancellation win; otherwise say so instead of failing an assert.
                await anyio.lowlevel.checkpoint()
                raise DatabaseUnavailableError(
                    "the embedded PostgreSQL was released while it was starting (the library "
                    "is shutting down); open the database again"
                )
            return url

    async def pool(self) -> Pool:
        if self._pool is None:
            url = await self.open_database()
            async with self._locks()[1]:
                if self._pool is None:
                    db = self.settings.database
                    max_size = db.max_connections if db else 10
                    # One connection now, the others when work asks for them (up to
                    # max_size): a one-shot `cocod update` uses one, and opening
                    # min_connections (5 by default) cost each fresh process four more
                    # backends and their codec set-up. Like v0's pool, which opens its
                    # minimum in the background rather than before the first query.
                    self._pool = await open_pool(url, min_size=1, max_size=max_size)
        return self._pool

    async def ensure_database_running(self) -> bool:
        """True when the database answers now; never raises for connectivity problems.

        A dead embedded postmaster is restarted (in a worker thread; the caller owns the
        backoff between calls); an external database gets a connect probe of
        ``PROBE_TIMEOUT_SECONDS``. Logs ``database.restarted`` / ``database.down`` once per
        transition, not on every call.
        """
        restarted = False
        try:
            if self.is_embedded:
                await self.open_database()
                embedded = self._embedded
                if embedded is None:  # released meanwhile (closing)
                    return self._note_state(False, "the embedded server was released")
                restarted = await anyio.to_thread.run_sync(embedded.ensure_running)
            url = await self.open_database()
            with anyio.fail_after(PROBE_TIMEOUT_SECONDS):
                conn = await connect(url, timeout=PROBE_TIMEOUT_SECONDS)
                try:
                    await conn.fetchval("SELECT 1")
                finally:
                    await conn.close(timeout=PROBE_TIMEOUT_SECONDS)
        except (OSError, TimeoutError, asyncpg.PostgresError, DatabaseError) as e:
            return self._note_state(False, f"{type(e).__name__}: {e}")
        if restarted:
            if self._pool is not None:
                # Its idle connections died with the old server; reconnect on next use.
                await self._pool.expire_connections()
            log.warning("database.restarted", embedded=True)
            self._is_database_up = True
            return True
        return self._note_state(True, None)

    def _note_state(self, is_up: bool, error: str | None) -> bool:
        if is_up != self._is_database_up:
            if is_up and self._is_database_up is False:
                log.warning("database.restarted", embedded=self.is_embedded)
            elif not is_up:
                log.warning("database.down", embedded=self.is_embedded, error=error)
            self._is_database_up = is_up
        return is_up

    # -- closing -----------------------------------------------------------------------------
    async def aclose(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109  (a budget)
        """Close the pool within ``timeout`` s (then terminate its connections), then
        release the embedded server in a worker thread (a fast shutdown if this process
        was its last user). Safe to call twice; the context may be opened again after."""
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.move_on_after(timeout, shield=True) as scope:
                try:
                    await pool.close()
                except Exception as e:  # closing is best effort; terminate below
                    log.warning("context.pool_close_failed", error=str(e))
                    scope.cancel()
            if scope.cancelled_caught or scope.cancel_called:
                log.warning("context.pool_terminated", timeout=timeout)
                pool.terminate()
        await self.release_embedded()

    async def release_embedded(self) -> None:
        """Release the embedded server in a worker thread (bounded by the server's own
        stop deadlines: fast shutdown, then immediate, then SIGKILL)."""
        if self._embedded is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.release_embedded_now)

    def release_embedded_now(self) -> None:
        """Best-effort synchronous release for a forced exit; never raises."""
        with self._embedded_lock:
            embedded, self._embedded = self._embedded, None
            if embedded is not None:
                self._url = None
        if embedded is not None:
            try:
                embedded.stop()
            except Exception as e:  # an exit path: log and go on
                log.warning("context.release_failed", error=str(e))

    def close(self) -> None:
        if self._pool is not None:
            try:
                bridge.run(self.aclose())
            except Exception as e:  # closing is best effort at exit
                log.debug("context.close_failed", error=str(e))
        self.release_embedded_now()


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _with_credentials(url: str, user: str | None, password: str | None) -> str:
    if not user or "://" not in url or "@" in url:
        return url
    scheme, rest = url.split("://", 1)
    creds = user if password is None else f"{user}:{password}"
    return f"{scheme}://{creds}@{rest}"


_lock = threading.Lock()
_context: LibraryContext | None = None
_context_is_explicit = False
"""True when ``init(settings)`` built the context; False when it came from env defaults."""
_settings_fn: Callable[[], Settings] | None = None

SettingsFn = Callable[[], Settings]


@overload
def settings(fn: SettingsFn) -> SettingsFn: ...
@overload
def settings(fn: None = None) -> Callable[[SettingsFn], SettingsFn]: ...
def settings(fn: SettingsFn | None = None) -> SettingsFn | Callable[[SettingsFn], SettingsFn]:
    """Decorator: register the function that provides the settings (v0's
    ``@cocoindex.settings``, bare or called). ``init()`` without arguments and the first
    use of the library (under the ``cocod`` CLI too) call it.

    Whatever ran first: a context already built from the environment defaults, before the
    app registered its function, is dropped when it has not connected yet, so the function
    decides where the rows go; one that has connected keeps its database until ``init()``.
    """

    def register(fn: SettingsFn) -> SettingsFn:
        global _settings_fn, _context
        with _lock:
            if _settings_fn is not None and _settings_fn is not fn:
                warnings.warn(
                    f"a second @cocod.settings function ({_describe(fn)}) replaces the first "
                    f"({_describe(_settings_fn)})",
                    UserWarning,
                    stacklevel=3,
                )
            _settings_fn = fn
            stale = _context
            if stale is not None and not _context_is_explicit and not stale.is_connected:
                _context = None
        return fn

    return register(fn) if fn is not None else register


def _describe(fn: Callable[..., object]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _settings_from_fn_or_env() -> Settings:
    if _settings_fn is None:
        return Settings.from_env()
    value = _settings_fn()
    if not isinstance(value, Settings):
        raise SettingsError(
            f"the @cocod.settings function {_describe(_settings_fn)} returned "
            f"{type(value).__name__}; it must return a cocod.Settings"
        )
    return value


def init(settings: Settings | None = None) -> None:
    """(Re)initialise the library with explicit settings, the registered function, or env."""
    global _context, _context_is_explicit
    if settings is None:
        settings = _settings_from_fn_or_env()
    if not isinstance(settings, Settings):
        raise SettingsError(f"init() expects a cocod.Settings, got {type(settings).__name__}")
    _quiet_logging_by_default()
    with _lock:
        old, _context = _context, LibraryContext(settings)
        _context_is_explicit = True
    if old is not None:
        old.close()


def get_context() -> LibraryContext:
    global _context, _context_is_explicit
    with _lock:
        if _context is not None:
            return _context
    # The user's settings function runs outside the lock: it may touch the library itself.
    _quiet_logging_by_default()
    fresh = LibraryContext(_settings_from_fn_or_env())
    with _lock:
        if _context is None:  # another thread may have built one meanwhile: first wins
            _context = fresh
            _context_is_explicit = False
        return _context


def _quiet_logging_by_default() -> None:
    """Plain scripts see warnings and errors only, unless the application configured logging."""
    if not structlog.is_configured():
        from cocod.logs import configure_logging

        configure_logging("warning")


def stop() -> None:
    """Close the pool and release the embedded server; flows may be reopened after init()."""
    global _context, _context_is_explicit
    with _lock:
        ctx, _context = _context, None
        _context_is_explicit = False
    if ctx is not None:
        ctx.close()
    from cocod.runtime.coordination import reset_coordination

    reset_coordination()


def get_app_namespace(*, trailing_delimiter: str | None = None) -> str:
    ns = get_context().settings.app_namespace
    if ns and trailing_delimiter:
        return ns + trailing_delimiter
    return ns


def _stop_before_interpreter_exit() -> None:
    """Close the pool, release the embedded server, then stop the bridge's loop thread.

    Run from ``threading``'s exit hooks, which fire before daemon threads are frozen for
    interpreter finalisation: later, the bridge's loop thread (a daemon thread) could no
    longer answer, and stopping its portal from a finaliser would wait for ever.
    """
    stop()
    bridge.stop()


# Before daemon threads freeze (the same hook concurrent.futures uses); the plain atexit
# registration stays for interpreters without it.
_register_thread_exit = getattr(threading, "_register_atexit", None)
if _register_thread_exit is not None:
    _register_thread_exit(_stop_before_interpreter_exit)
atexit.register(stop)
