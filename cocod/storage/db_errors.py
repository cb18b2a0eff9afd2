"""Driver errors as cocod errors (the mapping at the database adapter boundary), and
which of them a retry may get past.

Every error asyncpg (or the socket under it) raises comes out of the storage layer as
:class:`~cocod.errors.DatabaseUnavailableError` (the server cannot be reached now: retry
with backoff) or :class:`~cocod.errors.DatabaseError` (it rejected a statement), with a
one-line message saying what to do and the driver error chained (``from``). Its own
module so the mapping is read in one place; :mod:`cocod.storage.pool` applies it to
every pooled connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from cocod.errors import DatabaseError, DatabaseUnavailableError
from cocod.storage.db_url import redact

UNAVAILABLE_POSTGRES_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # 08xxx, ConnectionDoesNotExistError included
    asyncpg.AdminShutdownError,  # 57P01: the server is shutting down
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.CannotConnectNowError,  # 57P03: starting up or in recovery
    asyncpg.TooManyConnectionsError,  # 53300
)
CONFIG_POSTGRES_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError,  # 28xxx: user or password
    asyncpg.InvalidCatalogNameError,  # 3D000: no such database
)


def unavailable_error(where: str, error: BaseException) -> DatabaseUnavailableError:
    detail = " ".join(str(error).split()) or type(error).__name__
    return DatabaseUnavailableError(
        f"the database{where} cannot be reached ({type(error).__name__}: {detail}); "
        "check that PostgreSQL is running and the URL is right - cocod retries with backoff"
    )


def translate_asyncpg_error(
    error: BaseException, url: str | None = None, *, connecting: bool = False
) -> DatabaseError | None:
    """The cocod error for a driver error, or None when ``error`` is not the driver's.

    ``connecting`` widens the mapping to every ``OSError`` and ``TimeoutError`` (while
    opening a connection they can only come from the socket); inside a statement block
    only connection-level OS errors are mapped, so an unrelated ``OSError`` or a caller's
    own deadline passes through untouched.
    """
    where = f" at {redact(url)}" if url else ""
    if isinstance(error, CONFIG_POSTGRES_ERRORS):
        return DatabaseError(
            f"the database{where} refused the connection: {error}; check the user, password "
            "and database name in the URL (COCOD_DATABASE_URL or [database] url)"
        )
    if isinstance(error, UNAVAILABLE_POSTGRES_ERRORS):
        return unavailable_error(where, error)
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = getattr(error, "sqlstate", None) or "?"
        return DatabaseError(
            f"the database{where} rejected a statement ({type(error).__name__}, "
            f"SQLSTATE {sqlstate}): {' '.join(str(error).split())}"
        )
    if isinstance(error, asyncpg.InterfaceError):
        if "closed" in str(error) or "closing" in str(error):  # pool or connection closed
            return unavailable_error(where, error)
        return DatabaseError(f"database client error{where}: {error}")
    if isinstance(error, asyncpg.InternalClientError):
        return DatabaseError(f"database client error{where}: {error}")
    if isinstance(error, ConnectionError):  # refused, reset, broken pipe
        return unavailable_error(where, error)
    if connecting and isinstance(error, OSError | TimeoutError):
        return unavailable_error(where, error)
    return None


@contextmanager
def map_asyncpg_errors(url: str | None = None, *, connecting: bool = False) -> Iterator[None]:
    """Raise driver errors from the block as cocod errors (see
    :func:`translate_asyncpg_error`), chained with ``from``; errors already in the cocod
    tree, cancellation and anything else that is not the driver's pass through unchanged."""
    try:
        yield
    except Exception as e:
        mapped = translate_asyncpg_error(e, url, connecting=connecting)
        if mapped is None:
            raise
        raise mapped from e


_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,  # the connection is gone
    asyncpg.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.InsufficientResourcesError,  # too many connections
    asyncpg.InterfaceError,  # connection or pool closed
    ConnectionError,
)


def _driver_error(error: BaseException) -> BaseException:
    """The driver's error under a cocod DatabaseError (the pool maps and chains them)."""
    if isinstance(error, DatabaseError) and error.__cause__ is not None:
        return error.__cause__
    return error


def is_unavailable_error(error: BaseException) -> bool:
    """The database cannot be reached now: retrying row by row would only wait longer."""
    return isinstance(error, DatabaseUnavailableError) or isinstance(
        _driver_error(error), _UNAVAILABLE
    )


def is_transient_error(error: BaseException) -> bool:
    """Whether retrying the same write may succeed: lost connection, conflict, restart."""
    if is_unavailable_error(error):
        return True
    return isinstance(
        _driver_error(error),
        asyncpg.TransactionRollbackError  # serialization failure, deadlock
        | asyncpg.QueryCanceledError  # statement or lock timeout
        | TimeoutError,
    )


__all__ = [
    "CONFIG_POSTGRES_ERRORS",
    "UNAVAILABLE_POSTGRES_ERRORS",
    "is_transient_error",
    "is_unavailable_error",
    "map_asyncpg_errors",
    "translate_asyncpg_error",
    "unavailable_error",
]
