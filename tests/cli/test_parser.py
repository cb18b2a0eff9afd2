"""The CLI's daemon sub-commands are the protocol's command table, not a second copy."""

from __future__ import annotations

import argparse

import pytest

from cocod.cli.parser import APP_COMMANDS, CLI_ONLY_OPTIONS, build_parser
from cocod.control.protocol import COMMANDS


def _sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _option_dests(sub: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in sub._actions}


def test_every_table_command_is_a_sub_command_with_every_argument() -> None:
    subs = _sub_parsers(build_parser())
    for command in COMMANDS.values():
        assert command.name in subs, command.name
        dests = _option_dests(subs[command.name])
        for arg in command.args:
            # The v0-shaped commands take the instance name as their APP_TARGET|INSTANCE.
            dest = "target" if arg.name == "name" and command.name in APP_COMMANDS else arg.name
            special = CLI_ONLY_OPTIONS.get((command.name, arg.name), ())
            flags = {flag for a in subs[command.name]._actions for flag in a.option_strings}
            assert dest in dests or (special and all(o in flags for o, _ in special)), (
                f"cocod {command.name} lacks {arg.name!r}"
            )


def test_generated_commands_follow_the_table() -> None:
    parser = build_parser()
    args = parser.parse_args(["remove", "extra", "--drop"])
    assert (args.name, args.drop, args.handler) == (
        "extra",
        True,
        "cocod.cli.daemon_commands:cmd_daemon",
    )
    assert parser.parse_args(["status"]).name is None  # optional positional in the table
    added = parser.parse_args(["add", "n", "mod:factory", "--on-demand", "--param", "a=1"])
    assert (added.live, added.param, added.definition) == (False, ["a=1"], "mod:factory")
    assert parser.parse_args(["add", "n", "mod:factory"]).live is None  # the daemon's default
    with pytest.raises(SystemExit):
        parser.parse_args(["open"])  # the table says the name is required


def test_v0_app_commands_keep_their_flags() -> None:
    parser = build_parser()
    update = parser.parse_args(["update", "main.py", "-L", "--full-reprocess", "--reexport", "-q"])
    assert (update.target, update.live, update.full_reprocess, update.quiet) == (
        "main.py",
        True,
        True,
        True,
    )
    query = parser.parse_args(["query", "main.py:Flow", "some text", "--top", "3"])
    assert (query.target, query.text, query.top) == ("main.py:Flow", "some text", 3)
    assert parser.parse_args(["query", "docs", "x"]).top == 5
    drop = parser.parse_args(["drop", "main.py", "A", "B", "-f"])
    assert (drop.flow_names, drop.force) == (["A", "B"], True)
    assert parser.parse_args(["show", "main.py", "-v"]).verbose is True
    assert parser.parse_args(["ls"]).target is None


def test_v0_evaluate_and_the_instance_flag() -> None:
    parser = build_parser()
    evaluate = parser.parse_args(["evaluate", "main.py:Flow", "-o", "out", "--no-cache"])
    assert (evaluate.target, evaluate.output_dir, evaluate.cache) == ("main.py:Flow", "out", False)
    assert parser.parse_args(["evaluate", "main"]).cache is True  # v0's default
    assert evaluate.handler == "cocod.cli.app_commands:cmd_evaluate"
    for command in ("setup", "drop", "update", "ls"):
        assert parser.parse_args([command, "main", "--instance"]).instance is True
    assert parser.parse_args(["query", "main", "text", "--instance"]).instance is True
    assert parser.parse_args(["update", "main"]).instance is False
    assert parser.parse_args(["update", "main", "--setup"]).setup is True
