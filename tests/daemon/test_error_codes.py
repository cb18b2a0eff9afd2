"""Exception → wire code: by the table, along the class hierarchy, never by except order."""

from __future__ import annotations

import pytest

from cocod import errors
from cocod.control.protocol import ErrorCode
from cocod.daemon.server import ERROR_CODES, error_code_of, error_reply_of


class _LaterSubclass(errors.DatabaseUnavailableError):
    """A subclass nobody listed inherits its nearest listed ancestor's code."""


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.ProtocolError(ErrorCode.UNKNOWN_FLOW, "no such"), "unknown_flow"),
        (errors.SetupOutOfDateError("run setup"), "setup_required"),
        (errors.DatabaseUnavailableError("refused"), "database_unavailable"),
        (errors.EmbeddedPostgresError("initdb failed"), "database_unavailable"),
        (_LaterSubclass("lost"), "database_unavailable"),
        (errors.DatabaseError("syntax"), "database_error"),
        (errors.SettingsError("bad key"), "bad_config"),
        (errors.SourceError("missing root"), "flow_failed"),
        (errors.RowError("row"), "flow_failed"),
        (errors.DuplicateKeyError("dup"), "flow_failed"),
        (errors.SetupError("setup failed"), "flow_failed"),
        (errors.AppLoadError("no module"), "flow_failed"),
        (errors.CocodError("other"), "flow_failed"),
        (ZeroDivisionError("division by zero"), "internal"),
        (SystemExit(3), "internal"),
        (ExceptionGroup("one", [errors.SettingsError("inside a task group")]), "bad_config"),
        (ExceptionGroup("two", [errors.SettingsError("a"), KeyError("b")]), "internal"),
    ],
)
def test_each_exception_gets_its_code(error: BaseException, code: str) -> None:
    assert error_code_of(error) == code


def test_every_code_in_the_table_is_a_known_wire_code() -> None:
    known = set(vars(ErrorCode).values())
    assert all(code is None or code in known for _, code in ERROR_CODES)


def test_internal_errors_are_one_line_without_a_traceback() -> None:
    try:
        raise KeyError("first line\nsecond line")
    except KeyError as e:
        code, message = error_reply_of(e)
    assert code == "internal"
    assert message.startswith("KeyError: ") and "\n" not in message
    assert "Traceback" not in message
    assert error_reply_of(errors.DatabaseError("a\n  b")) == ("database_error", "a b")
