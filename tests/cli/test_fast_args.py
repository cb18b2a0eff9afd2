"""The argparse-free paths read a command line exactly as argparse does.

``cocod.cli.fast_args`` reads the hot daemon commands without argparse, and
``build_parser(only=command_word(argv))`` builds one sub-command instead of all of them;
both are worth their keep only if no command line can tell them from the full parser.
"""

from __future__ import annotations

import contextlib
import io

import pytest

from cocod.cli.fast_args import fast_args
from cocod.cli.parser import build_parser, command_word

HOT = [
    ["ping"],
    ["ping", "--json"],
    ["status"],
    ["status", "docs"],
    ["status", "docs", "--json"],
    ["status", "--json", "docs"],
    ["status", "--socket", "/tmp/s.sock"],
    ["status", "--socket=/tmp/s.sock", "docs"],
    ["status", "--socket="],
    ["status", ""],
    ["status", "--json", "--json"],
    ["status", "--socket", "a", "--socket", "b"],
    ["ls"],
    ["ls", "--json", "--socket", "x"],
    ["ls", "--instance"],
]

NOT_HOT = [
    [],
    ["-V"],
    ["--help"],
    ["status", "-h"],
    ["status", "a", "b"],
    ["status", "--js"],  # an abbreviation: argparse's business
    ["status", "--socket"],
    ["status", "--socket", "--json"],
    ["status", "--", "x"],
    ["ping", "extra"],
    ["ls", "app.py"],
    ["-e", "x.env", "status"],
    ["pause", "docs"],
    ["statu"],
]


@pytest.mark.parametrize("argv", HOT, ids=" ".join)
def test_hot_command_lines_give_argparses_namespace(argv: list[str]) -> None:
    fast = fast_args(argv)
    assert fast is not None
    assert vars(fast) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", NOT_HOT, ids=" ".join)
def test_other_command_lines_are_left_to_argparse(argv: list[str]) -> None:
    assert fast_args(argv) is None


def _outcome(parser_argv: list[str], only: str | None, full: bool) -> tuple[object, str, str]:
    """What parsing prints and returns (or the exit status), with the full or one-command
    parser."""
    out, err = io.StringIO(), io.StringIO()
    parser = build_parser() if full else build_parser(only=only)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result: object = vars(parser.parse_args(parser_argv))
        except SystemExit as e:
            result = ("exit", e.code)
    return result, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        *HOT,
        *NOT_HOT,
        ["update", "main.py", "-L", "--full-reprocess"],
        ["-d", "apps", "update", "main.py"],
        ["--app-dir=apps", "query", "docs", "ls", "--top", "3"],
        ["--app", "apps", "show", "main.py"],
        ["-dapps", "evaluate", "main.py", "--no-cache"],
        ["-e", "status", "ping"],  # an env file named like a command
        ["--env", "status", "ping"],
        ["-V", "status"],
        ["--ver", "status"],
        ["--help", "status"],
        ["-h"],
        ["search", "text", "--instance", "a,b", "--top", "3"],
        ["add", "n", "mod:factory", "--on-demand", "--param", "a=1"],
        ["remove", "x", "--drop"],
        ["open"],
        ["serve", "--config", "c.toml"],
        ["verify", "docs", "--repair"],
        ["bogus", "status"],
        ["-e"],
        ["-x", "status"],
        ["--", "status"],
        ["-Vh", "status"],
    ],
    ids=lambda argv: " ".join(argv) or "(none)",
)
def test_building_only_the_named_command_parses_alike(argv: list[str]) -> None:
    """Same namespace, same help and errors, same exit status as the full parser."""
    only = command_word(argv)
    assert _outcome(argv, only, full=False) == _outcome(argv, only, full=True)


def test_command_word_finds_the_command_past_global_options() -> None:
    assert command_word(["-e", "ls", "status"]) == "status"
    assert command_word(["--env-file=a", "-dx", "ping"]) == "ping"
    assert command_word(["--help", "status"]) is None  # top-level help lists them all
    assert command_word([]) is None
