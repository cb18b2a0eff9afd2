"""Parsing one request line: every way it can be wrong is a ProtocolError, nothing else."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cocod.control.protocol import (
    COMMANDS,
    MAX_DEPTH,
    MAX_INT_DIGITS,
    MAX_LIST_ITEMS,
    ErrorCode,
    ProtocolError,
    encode,
    nesting_depth,
    parse_request,
)
from cocod.errors import CocodError


def refused(line: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_request(line)
    return caught.value


def test_a_valid_request_is_parsed_with_its_id_command_and_args() -> None:
    request = parse_request(b'{"id": "a-1", "cmd": "query", "args": {"name": "d", "text": "x"}}\n')
    assert (request.id, request.command.name, request.args) == (
        "a-1",
        "query",
        {"name": "d", "text": "x"},
    )
    assert parse_request(b'{"cmd": "ping", "args": null}').args == {}
    assert isinstance(refused(b"{"), CocodError)  # part of the one exception tree


@pytest.mark.parametrize(
    ("line", "code", "words"),
    [
        (b"{not json", ErrorCode.BAD_JSON, "not valid JSON"),
        (b"\xff\xfe{\x00}\x00", ErrorCode.BAD_JSON, "UTF-8"),  # would decode as UTF-16
        (b'{"id": 1, "cmd": "ping\x00"}', ErrorCode.BAD_JSON, "not valid JSON"),
        (b'{"id": NaN, "cmd": "ping"}', ErrorCode.BAD_JSON, "NaN"),
        (b'{"id": -Infinity, "cmd": "ping"}', ErrorCode.BAD_JSON, "Infinity"),
        (b'{"id": 1e999, "cmd": "ping"}', ErrorCode.BAD_JSON, "out of range"),
        (b'{"id": ' + b"7" * 5000 + b', "cmd": "ping"}', ErrorCode.BAD_JSON, "5000 digits"),
        (b"[" * 100_000, ErrorCode.BAD_JSON, f"deeper than {MAX_DEPTH}"),
        (b'{"a":' * 100_000, ErrorCode.BAD_JSON, f"deeper than {MAX_DEPTH}"),
        (b"[1, 2]", ErrorCode.BAD_REQUEST, "JSON object"),
        (b'{"id": 1}', ErrorCode.BAD_REQUEST, "'cmd'"),
        (b'{"id": 1, "cmd": 5}', ErrorCode.BAD_REQUEST, "'cmd'"),
        (b'{"cmd": "explode"}', ErrorCode.UNKNOWN_COMMAND, "explode"),
        (b'{"cmd": "ping", "args": [1]}', ErrorCode.BAD_ARGS, "got an array"),
        (b'{"cmd": "ping", "args": "x"}', ErrorCode.BAD_ARGS, "got a string"),
        (b'{"cmd": "status", "args": {"name": 7}}', ErrorCode.BAD_ARGS, "must be a string"),
        (b'{"cmd": "status", "args": {"nope": 1}}', ErrorCode.BAD_ARGS, "unknown argument"),
        (b'{"cmd": "open", "args": {}}', ErrorCode.BAD_ARGS, "missing argument 'name'"),
        (
            b'{"cmd": "update", "args": {"name": "d", "full_reprocess": 1}}',
            ErrorCode.BAD_ARGS,
            "boolean",
        ),
    ],
)
def test_malformed_lines_are_refused_with_a_code(line: bytes, code: str, words: str) -> None:
    error = refused(line)
    assert error.code == code and words in error.message, error.message


@pytest.mark.parametrize("top", [-1, 0, 1001, 10**30])
def test_query_top_outside_its_range_is_bad_args(top: int) -> None:
    line = json.dumps({"id": 9, "cmd": "query", "args": {"name": "d", "text": "x", "top": top}})
    error = refused(line.encode())
    assert error.code == ErrorCode.BAD_ARGS and "between 1 and 1000" in error.message
    assert error.request_id == 9  # refusals still carry the id
    for top_ok in (1, 1000):
        ok = {"name": "d", "text": "x", "top": top_ok}
        assert parse_request(json.dumps({"cmd": "query", "args": ok}).encode()).args == ok


def request(cmd: str, **args: Any) -> bytes:
    return json.dumps({"id": 1, "cmd": cmd, "args": args}).encode()


def test_a_many_argument_takes_one_value_or_a_bounded_list_of_them() -> None:
    assert parse_request(request("search", text="x", instance="a")).args["instance"] == "a"
    listed = parse_request(request("search", text="x", instance=["a", "b"]))
    assert listed.args["instance"] == ["a", "b"]
    wrong = refused(request("search", text="x", instance=["a", 3]))
    assert wrong.code == ErrorCode.BAD_ARGS and "a string or a list of them" in wrong.message
    nested = refused(request("search", text="x", instance=[["a"]]))
    assert nested.code == ErrorCode.BAD_ARGS
    too_many = refused(request("search", text="x", instance=["a"] * (MAX_LIST_ITEMS + 1)))
    assert too_many.code == ErrorCode.BAD_ARGS and str(MAX_LIST_ITEMS) in too_many.message
    # Only arguments marked `many` take lists.
    assert refused(request("status", name=["a"])).code == ErrorCode.BAD_ARGS


def test_a_choice_argument_takes_only_its_choices() -> None:
    for flow in ("code", "text"):
        assert parse_request(request("add", name="n", path="/p", flow=flow)).args["flow"] == flow
    error = refused(request("add", name="n", path="/p", flow="poetry"))
    assert error.code == ErrorCode.BAD_ARGS and "code, text" in error.message
    # `add` needs no definition now (a built-in flow with --path); the handler checks that
    # one of the two is given.
    assert parse_request(request("add", name="n", path="/p")).args == {"name": "n", "path": "/p"}


def test_commands_that_run_in_the_client_are_not_served_over_the_socket() -> None:
    assert COMMANDS["mcp"].runs_in_client
    error = refused(request("mcp"))
    assert error.code == ErrorCode.UNKNOWN_COMMAND
    assert "mcp" not in error.message.split("known: ")[1].split(", ")
    assert "search" in error.message and "pause" in error.message


def test_booleans_are_not_integers() -> None:
    line = b'{"cmd": "query", "args": {"name": "d", "text": "x", "top": true}}'
    assert refused(line).code == ErrorCode.BAD_ARGS


def test_ids_of_any_json_type_come_back() -> None:
    for request_id in (None, 0, -3.5, "x", True, [1, {"a": None}], {"k": [1]}):
        line = json.dumps({"id": request_id, "cmd": "ping"}).encode()
        assert parse_request(line).id == request_id
        bad = json.dumps({"id": request_id, "cmd": "nope"}).encode()
        assert refused(bad).request_id == request_id


def test_limits_sit_exactly_at_the_boundary() -> None:
    deep_ok = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    ok = b'{"cmd": "ping", "id": ' + deep_ok + b"}"
    assert nesting_depth(ok) == MAX_DEPTH + 1  # the request object itself is a level
    assert refused(ok).code == ErrorCode.BAD_JSON
    inner = b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1)
    assert parse_request(b'{"cmd": "ping", "id": ' + inner + b"}").command.name == "ping"
    digits_ok = b"9" * MAX_INT_DIGITS
    assert parse_request(b'{"cmd": "ping", "id": -' + digits_ok + b"}").id == -int(digits_ok)
    assert refused(b'{"cmd": "ping", "id": 1' + digits_ok + b"}").code == ErrorCode.BAD_JSON


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[" * 10_000 + '\\"{' + "\\\\" + "}" * 3
    line = json.dumps({"cmd": "query", "args": {"name": "d", "text": text}}).encode()
    assert nesting_depth(line) == 2
    assert parse_request(line).args["text"] == text


def test_the_depth_scan_is_linear_on_hostile_lines() -> None:
    for line in (b"[]" * 500_000, b'"\\"' * 330_000, b"[" * 1_000_000):
        started = time.monotonic()
        nesting_depth(line)
        assert time.monotonic() - started < 2.0  # generous: quadratic would take minutes


def test_replies_are_always_strict_json() -> None:
    with pytest.raises(ValueError):
        encode({"id": 1, "ok": True, "result": float("nan")})
    assert json.loads(encode({"id": "\ud800", "ok": True}))["id"] == "\ud800"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**80), max_value=10**80)
    | st.floats()
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    command=st.sampled_from(sorted(COMMANDS)),
    args=st.dictionaries(
        st.sampled_from(["name", "text", "top", "drop", "live", "params", "x"]),
        json_values,
        max_size=4,
    )
    | json_values,
    request_id=json_values,
)
def test_structured_requests_are_parsed_or_refused_never_crash(
    command: str, args: Any, request_id: Any
) -> None:
    line = json.dumps({"id": request_id, "cmd": command, "args": args}).encode()
    try:
        request = parse_request(line)
    except ProtocolError as e:
        assert e.code in vars(ErrorCode).values()
        return
    for spec in request.command.args:
        if spec.required:
            assert spec.name in request.args


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_raw_bytes_are_parsed_or_refused_never_crash(line: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_request(line)
