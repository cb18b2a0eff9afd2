"""Naming rules shared by flows, fields, targets and tables (v0's ``validation.py``)."""

from __future__ import annotations

import re

from cocod.errors import NamingError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FULL_FLOW_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
MAX_NAME_LENGTH = 64
MAX_PG_IDENTIFIER_BYTES = 63


def _validate(name: object, what: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(name, str) or not name:
        raise NamingError(f"{what} name must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise NamingError(f"{what} name {name!r} is longer than {MAX_NAME_LENGTH} characters")
    if name.startswith("__"):
        raise NamingError(f"{what} name {name!r} must not start with '__' (reserved)")
    if not pattern.match(name):
        raise NamingError(
            f"{what} name {name!r} is invalid: use letters, digits and '_', "
            "not starting with a digit"
        )
    return name


def validate_flow_name(name: object) -> str:
    return _validate(name, "flow", _IDENTIFIER)


def validate_full_flow_name(name: object) -> str:
    return _validate(name, "full flow", _FULL_FLOW_NAME)


def validate_field_name(name: object) -> str:
    return _validate(name, "field", _IDENTIFIER)


def validate_target_name(name: object) -> str:
    return _validate(name, "target", _IDENTIFIER)


def validate_app_namespace(name: object) -> str:
    return _validate(name, "app namespace", _IDENTIFIER)


def validate_sql_identifier(name: object, what: str) -> str:
    """Explicit table/schema/column names: identifier syntax and Postgres' 63-byte limit.

    v0 let Postgres silently truncate long names; two long names could then collide.
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise NamingError(
            f"{what} {name!r} is invalid: use letters, digits and '_', not starting with a digit"
        )
    if len(name.encode()) > MAX_PG_IDENTIFIER_BYTES:
        raise NamingError(
            f"{what} {name!r} is {len(name.encode())} bytes long; Postgres identifiers are "
            f"limited to {MAX_PG_IDENTIFIER_BYTES} bytes. Choose a shorter name."
        )
    return name


def sanitize_name(name: str) -> str:
    """v0's default-table-name sanitiser: keep alphanumerics and '_', others become '__'."""
    return "".join(c if (c.isascii() and (c.isalnum() or c == "_")) else "__" for c in name)


def camel_case(snake: str) -> str:
    """``extract_ext`` → ``ExtractExt`` (v0's custom-function op kind)."""
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_") if part)


def snake_case(camel: str) -> str:
    """``SplitRecursively`` → ``split_recursively`` (auto-generated op names)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def quote_ident(name: str) -> str:
    """Quote a SQL identifier (always: cocod never relies on Postgres case folding)."""
    return '"' + name.replace('"', '""') + '"'
