"""Database URLs read as libpq reads them, and kept out of logs with their passwords.

Its own module because it is pure string handling (no driver): the pool, the lease
sessions and the CLI's messages all read or redact the same URL.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from cocod.errors import DatabaseError

_LIBPQ_QUERY_PARAMETERS = {
    "host": "host",
    "hostaddr": "host",
    "port": "port",
    "user": "user",
    "password": "password",
    "dbname": "database",
    "database": "database",
}
"""Query parameters libpq lets override the URL's authority and path, and the asyncpg
argument each becomes (``hostaddr`` is an address; asyncpg has one place for both)."""


def connect_arguments(url: str) -> tuple[str, dict[str, Any]]:
    """The DSN and explicit connect arguments that make asyncpg read ``url`` as libpq does.

    libpq (and CocoIndex v0, through sqlx) lets ``?host=``, ``port``, ``user``,
    ``password`` and ``dbname`` in the query override the authority part:
    ``postgresql://me@localhost/db?host=/run/postgresql`` connects through the Unix socket
    in ``/run/postgresql``. asyncpg prefers the authority, so this moves those parameters
    out of the query into explicit arguments, which asyncpg puts first; a host that is a
    directory (starts with ``/``) is a socket directory for both. ``sslmode`` and the other
    parameters stay in the query, which asyncpg reads as libpq does.
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.query or parts.scheme not in ("postgresql", "postgres"):
        return url, {}
    kept: list[tuple[str, str]] = []
    kwargs: dict[str, Any] = {}
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        argument = _LIBPQ_QUERY_PARAMETERS.get(name)
        if argument is None:
            kept.append((name, value))
        elif value:  # an empty value means "not set" in libpq
            kwargs[argument] = value
    if not kwargs:
        return url, {}
    if "port" in kwargs:
        ports = [p.strip() for p in str(kwargs["port"]).split(",")]
        try:
            numbers = [int(p) for p in ports]
        except ValueError:
            raise DatabaseError(
                f"the database URL {redact(url)} has port={kwargs['port']!r}, which is not a "
                "port number; fix the URL"
            ) from None
        kwargs["port"] = numbers[0] if len(numbers) == 1 else numbers
    if "host" in kwargs and "," in kwargs["host"]:
        kwargs["host"] = [h.strip() for h in kwargs["host"].split(",")]
    query = urllib.parse.urlencode(kept)
    return urllib.parse.urlunsplit(parts._replace(query=query)), kwargs


def redact(url: str) -> str:
    """Hide a password in a URL (in its authority or as ``?password=``) before it reaches a
    log or an error message."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        if ":" in creds:
            netloc = f"{creds.split(':', 1)[0]}:***@{host}"
    query = parts.query
    if "password=" in query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{k}=***" if k == "password" else urllib.parse.urlencode({k: v}) for k, v in pairs
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def with_credentials(url: str, user: str | None, password: str | None) -> str:
    """``url`` with ``DatabaseConnectionSpec.user``/``password`` applied: like v0, they
    override what the URL says (carried as query parameters, which :func:`connect_arguments`
    puts before the authority)."""
    extra = [(k, v) for k, v in (("user", user), ("password", password)) if v]
    if not extra or "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    kept = [
        (k, v)
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if k not in {name for name, _ in extra}
    ]
    query = urllib.parse.urlencode([*kept, *extra])
    return urllib.parse.urlunsplit(parts._replace(query=query))


__all__ = ["connect_arguments", "redact", "with_credentials"]
