"""`monitor-scheduler COMMAND --help` explains every option: a one-line help, with the default for
an option that takes a value, and the range for a number."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

from monitor_scheduler.cli import build_parser

RANGE = re.compile(r"\d\s*(-|–|to)\s*\d|\d+[smh]? to \d")


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, f"{prefix} {name}".strip())
    if prefix:
        yield prefix, parser


def arguments(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            yield action


def test_every_option_of_every_command_has_a_one_line_help_with_its_default_and_range() -> None:
    problems = []
    for command, parser in commands(build_parser()):
        for action in arguments(parser):
            name = f"{command} {'/'.join(action.option_strings) or action.dest}"
            text = action.help or ""
            if not text.strip() or text == argparse.SUPPRESS:
                problems.append(f"{name}: no help")
                continue
            if "\n" in text:
                problems.append(f"{name}: help on more than one line")
            takes_value = action.option_strings and action.nargs != 0
            if takes_value and "default" not in text:
                problems.append(f"{name}: help does not say the default")
            if action.type is not None and not action.choices and not RANGE.search(text):
                problems.append(f"{name}: help does not say the range")
    assert not problems, "\n".join(problems)


def test_the_walk_sees_every_command() -> None:
    names = {command for command, _ in commands(build_parser())}
    assert {"dispatch", "worker", "schedule set", "schedule show", "schedule list", "check", "login-link", "sign-out"} <= names
