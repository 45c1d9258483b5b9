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


def undocumented_commands(readme: str) -> list[str]:
    """Commands the README never shows as `monitor-scheduler NAME` (a path like `worker/` or a
    setting like `WORKER_CLASS` does not count)."""
    return [name for name in command_names() if not re.search(rf"monitor-scheduler {re.escape(name)}(?![\w-])", readme)]


def test_every_command_is_in_the_readme() -> None:
    assert undocumented_commands(README) == []


@pytest.mark.parametrize("name", ["worker", "dispatch", "schedule"])
def test_the_command_check_fails_when_a_command_section_is_missing(name: str) -> None:
    pattern = re.compile(rf"monitor-scheduler {name}(?![\w-])")
    assert pattern.search(README), "the README shows the command today"
    assert undocumented_commands(pattern.sub("monitor-scheduler", README)) == [name]
