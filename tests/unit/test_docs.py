"""The docs match the code: every setting and every command is documented."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from monitor_scheduler.cli import build_parser
from core.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    for name in Settings.model_fields:
        assert f"| `{name}` |" in README, f"README settings table lacks {name}"


def command_names() -> list[str]:
    parser = build_parser()
    return list(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)


def command_row(name: str) -> re.Pattern[str]:
    """A row of the README's command table, `| NAME ... | what it does |` (a path like
    `worker/` or a setting like `WORKER_CLASS` elsewhere does not count)."""
    return re.compile(rf"^\| `{re.escape(name)}[ `]", re.MULTILINE)


def undocumented_commands(readme: str) -> list[str]:
    return [name for name in command_names() if not command_row(name).search(readme)]


def test_every_command_is_in_the_readme() -> None:
    assert undocumented_commands(README) == []


@pytest.mark.parametrize("name", ["worker", "dispatch", "schedule"])
def test_the_command_check_fails_when_a_command_section_is_missing(name: str) -> None:
    pattern = command_row(name)
    assert pattern.search(README), "the README's command table has the command today"
    assert undocumented_commands(pattern.sub("| `another-command ", README)) == [name]
