"""Naming rules: what v0 accepts for flows, fields, targets and namespaces, and the SQL
identifier limit cocod adds (Postgres would silently truncate a longer name)."""

from __future__ import annotations

import pytest

from cocod.errors import NamingError
from cocod.flow.naming import (
    MAX_NAME_LENGTH,
    camel_case,
    quote_ident,
    sanitize_name,
    snake_case,
    validate_app_namespace,
    validate_field_name,
    validate_flow_name,
    validate_full_flow_name,
    validate_sql_identifier,
    validate_target_name,
)

VALIDATORS = [validate_flow_name, validate_field_name, validate_target_name, validate_app_namespace]


@pytest.mark.parametrize("validate", VALIDATORS)
@pytest.mark.parametrize("name", ["a", "_x", "Flow1", "snake_case_name", "x" * MAX_NAME_LENGTH])
def test_identifiers_are_accepted(validate: object, name: str) -> None:
    assert validate(name) == name  # type: ignore[operator]


@pytest.mark.parametrize("validate", VALIDATORS)
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must be a non-empty string"),
        (None, "must be a non-empty string"),
        (3, "must be a non-empty string"),
        ("1abc", "use letters, digits and '_'"),
        ("has-dash", "use letters, digits and '_'"),
        ("has space", "use letters, digits and '_'"),
        ("dotted.name", "use letters, digits and '_'"),
        ("café", "use letters, digits and '_'"),
        ("__reserved", "must not start with '__'"),
        ("x" * (MAX_NAME_LENGTH + 1), f"longer than {MAX_NAME_LENGTH} characters"),
    ],
)
def test_bad_names_say_what_is_wrong(validate: object, name: object, message: str) -> None:
    with pytest.raises(NamingError, match=message.replace("(", r"\(")) as info:
        validate(name)  # type: ignore[operator]
    assert repr(name) in str(info.value)
    assert isinstance(info.value, ValueError)  # v0 raised ValueError


def test_full_flow_names_may_contain_dots_but_not_start_with_one() -> None:
    assert validate_full_flow_name("ns.Flow") == "ns.Flow"
    with pytest.raises(NamingError, match="full flow name"):
        validate_full_flow_name(".Flow")
    with pytest.raises(NamingError):
        validate_flow_name("ns.Flow")


def test_sql_identifiers_are_limited_to_63_bytes_not_characters() -> None:
    assert validate_sql_identifier("t" * 63, "table name") == "t" * 63
    with pytest.raises(NamingError, match=r"64 bytes long.*limited to 63 bytes") as info:
        validate_sql_identifier("t" * 64, "table name")
    assert "Choose a shorter name" in str(info.value)
    with pytest.raises(NamingError, match="table name 'a-b' is invalid"):
        validate_sql_identifier("a-b", "table name")
    with pytest.raises(NamingError, match="schema"):
        validate_sql_identifier(None, "schema")


def test_sanitize_name_doubles_underscores_for_every_other_character() -> None:
    assert sanitize_name("MyFlow") == "MyFlow"
    assert sanitize_name("ns.Flow") == "ns__Flow"
    assert sanitize_name("a-b c") == "a__b__c"
    assert sanitize_name("café") == "caf__"  # non-ASCII letters are not kept


@pytest.mark.parametrize(
    ("snake", "camel"),
    [("extract_ext", "ExtractExt"), ("x", "X"), ("split_recursively", "SplitRecursively")],
)
def test_case_conversions_round_trip(snake: str, camel: str) -> None:
    assert camel_case(snake) == camel
    assert snake_case(camel) == snake


def test_camel_case_drops_empty_parts() -> None:
    assert camel_case("__a__b_") == "AB"


def test_quote_ident_always_quotes_and_doubles_embedded_quotes() -> None:
    assert quote_ident("Rows") == '"Rows"'
    assert quote_ident('we"ird') == '"we""ird"'
