"""Hostile control-socket input against the real daemon: it answers every line and `ping`
still answers after each case.

Structured requests are built from the protocol's command table (right and wrong types,
values out of range, unknown arguments, ids of every JSON type); raw cases are bytes,
deep nesting, huge integers and non-finite numbers. Each case is sent on one connection
followed by a ping on the same connection (so a bad line must not close it), then a ping
on a fresh connection.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cocod.control.client import ControlClient
from cocod.control.protocol import COMMANDS, Arg
from tests.conftest import write
from tests.daemon.harness import DaemonProcess, eventually
from tests.daemon.test_daemon_e2e import instance

INSTANCE = "fuzzed"
PROBE_ID = "fuzz-probe"
DESTRUCTIVE = {"shutdown"}
"""Commands a fuzz case must not send: they end the daemon by design."""
KEEPS_INSTANCE = {"status", "open", "query", "update", "setup"}
"""Commands that may name the real instance without changing what later cases see."""


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: object
) -> Iterator[DaemonProcess]:
    from tests.conftest import _admin, _url_for

    workdir = tmp_path_factory.mktemp("socket_fuzz")
    _admin(postgres_server, 'CREATE DATABASE "socket_fuzz"')  # type: ignore[arg-type]
    url = _url_for(postgres_server, "socket_fuzz")  # type: ignore[arg-type]
    docs = workdir / "docs"
    write(docs / "a.md", "first paragraph\n\nsecond paragraph")
    process = DaemonProcess(workdir, url, instance(INSTANCE, docs, "fuzz_socket_rows"))
    process.start()
    eventually(lambda: process.state(INSTANCE) == "WATCHING", "the instance to watch")
    yield process
    process.stop()
    _admin(postgres_server, 'DROP DATABASE IF EXISTS "socket_fuzz" WITH (FORCE)')  # type: ignore[arg-type]


def _strict_json(line: bytes) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"reply contains {name}, which is not JSON: {line[:200]!r}")

    return json.loads(line, parse_constant=refuse)


def send_then_ping(daemon: DaemonProcess, payload: bytes) -> list[dict[str, Any]]:
    """Send ``payload`` and a ping on one connection; every reply up to the ping's."""
    probe = json.dumps({"id": PROBE_ID, "cmd": "ping"}).encode() + b"\n"
    replies: list[dict[str, Any]] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(str(daemon.socket))
        s.sendall(payload + b"\n" + probe)
        with s.makefile("rb") as stream:
            while True:
                line = stream.readline()
                assert line, f"the daemon closed the connection after {payload[:200]!r}"
                reply = _strict_json(line)
                assert isinstance(reply, dict) and "id" in reply, reply
                if "event" in reply:
                    continue
                assert isinstance(reply.get("ok"), bool), reply
                if not reply["ok"]:
                    error = reply["error"]
                    assert error["code"] and "\n" not in error["message"], error
                    assert "Traceback" not in error["message"]
                replies.append(reply)
                if reply["id"] == PROBE_ID:
                    break
    assert replies[-1]["ok"] is True and replies[-1]["result"]["pong"] is True
    return replies


def assert_still_serving(daemon: DaemonProcess) -> None:
    assert daemon.process is not None and daemon.process.poll() is None, "the daemon exited"
    assert ControlClient(daemon.socket, timeout=30).call("ping")["pong"] is True


# -- strategies --------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


def _value_for(command: str, arg: Arg) -> st.SearchStrategy[Any]:
    """A value of the argument's type (edge values included), or any JSON value."""
    if arg.name == "name":
        right: st.SearchStrategy[Any] = st.text(max_size=40).filter(lambda n: n != INSTANCE)
        if command in KEEPS_INSTANCE:
            right = right | st.just(INSTANCE)
    elif arg.name == "path":
        # `add --path` indexes a real folder: never let a case name one ("/", "~"), or the
        # fuzzed daemon would start indexing the machine.
        return (st.text(max_size=100).map(lambda t: "not-absolute/" + t) | json_values).filter(
            lambda v: not (isinstance(v, str) and v.lstrip().startswith(("/", "~")))
        )
    elif arg.type is int:
        right = st.integers(min_value=-(10**25), max_value=10**25) | st.integers(
            min_value=(arg.min or 0) - 2, max_value=(arg.max or 10) + 2
        )
    elif arg.type is bool:
        right = st.booleans()
    elif arg.type is dict:
        right = st.dictionaries(st.text(max_size=10), json_values, max_size=4)
    else:
        right = st.text(max_size=200)
    return right | json_values


@st.composite
def table_requests(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(set(COMMANDS) - DESTRUCTIVE)))
    command = COMMANDS[name]
    args: dict[str, Any] = {}
    for arg in command.args:
        if draw(st.booleans()) or (arg.required and draw(st.integers(0, 9)) > 0):
            args[arg.name] = draw(_value_for(name, arg))
    if draw(st.integers(0, 9)) == 0:
        args[draw(st.text(max_size=10))] = draw(json_values)  # an unknown argument
    message: dict[str, Any] = {"cmd": name, "args": args}
    if draw(st.integers(0, 9)) == 0:
        message["args"] = draw(json_values)  # args of the wrong shape
    if draw(st.booleans()):
        message["id"] = draw(json_values)
    return json.dumps(message).encode()


raw_cases = st.one_of(
    st.binary(max_size=2048).map(lambda b: b.replace(b"\n", b" ")),
    st.binary(max_size=256),  # may hold newlines: several lines, each answered
    st.integers(min_value=65, max_value=200_000).map(lambda n: b"[" * n),
    st.integers(min_value=65, max_value=50_000).map(lambda n: b'{"a":' * n),
    st.integers(min_value=65, max_value=20_000).map(
        lambda n: b'{"id": ' + b"9" * n + b', "cmd": "ping"}'
    ),
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400"]).map(
        lambda n: b'{"id": ' + n + b', "cmd": "ping"}'
    ),
    st.text(max_size=300).map(lambda t: t.replace("\n", " ").encode("utf-8", "surrogatepass")),
)


def fuzz(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
    )


@fuzz(400)
@given(request=table_requests())
def test_table_built_requests_never_break_the_daemon(daemon: DaemonProcess, request: bytes) -> None:
    replies = send_then_ping(daemon, request)
    assert len(replies) == 2, replies  # one reply for the case, one for the probe
    first = replies[0]
    # Every such line is valid JSON: refusing it is the table's job, never a crash.
    assert first["ok"] or first["error"]["code"] != "internal", (request, first)
    event(f"{json.loads(request)['cmd']}: {'ok' if first['ok'] else first['error']['code']}")
    assert_still_serving(daemon)


@fuzz(200)
@given(payload=raw_cases)
def test_raw_bytes_never_break_the_daemon(daemon: DaemonProcess, payload: bytes) -> None:
    send_then_ping(daemon, payload)
    assert_still_serving(daemon)


# -- the cases that killed the daemon, spelled out -------------------------------------------


def _error_of(daemon: DaemonProcess, payload: bytes) -> dict[str, Any]:
    replies = send_then_ping(daemon, payload)
    assert len(replies) == 2, replies
    assert replies[0]["ok"] is False, replies[0]
    assert_still_serving(daemon)
    return dict(replies[0]["error"])


def test_100000_nested_brackets_are_refused_not_fatal(daemon: DaemonProcess) -> None:
    error = _error_of(daemon, b"[" * 100_000)
    assert error["code"] == "bad_json" and "deeper than 64" in error["message"]


def test_a_5000_digit_id_is_refused_not_fatal(daemon: DaemonProcess) -> None:
    error = _error_of(daemon, b'{"id": ' + b"1" * 5000 + b', "cmd": "ping"}')
    assert error["code"] == "bad_json" and "5000 digits" in error["message"]


def test_query_top_out_of_range_is_bad_args(daemon: DaemonProcess) -> None:
    for top in (-1, 0, 1001):
        request = {"id": 5, "cmd": "query", "args": {"name": INSTANCE, "text": "x", "top": top}}
        error = _error_of(daemon, json.dumps(request).encode())
        assert error["code"] == "bad_args" and "between 1 and 1000" in error["message"]
    result = ControlClient(daemon.socket).call(
        "query", {"name": INSTANCE, "text": "first paragraph", "top": 1}
    )
    assert len(result["results"]) == 1


def test_assorted_hostile_lines_get_their_own_error_reply(daemon: DaemonProcess) -> None:
    cases = {
        b'{"id": 1, "cmd": "ping", "args": [1, 2]}': "bad_args",
        b'{"id": 2, "cmd": "status", "args": "name"}': "bad_args",
        b'{"id": 3, "cmd": "pi\x00ng"}': "bad_json",
        b'{"id": "\xff\xfe", "cmd": "ping"}': "bad_json",
        b'{"id": 1e999, "cmd": "ping"}': "bad_json",
        b'{"id": NaN, "cmd": "ping"}': "bad_json",
        b'{"id": [[[1]]], "cmd": "nope"}': "unknown_command",
        b'{"id": 4, "cmd": "status", "args": {"name": "\\ud800"}}': "unknown_flow",
    }
    for payload, code in cases.items():
        assert _error_of(daemon, payload)["code"] == code, payload
