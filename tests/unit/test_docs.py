"""The docs match the code: every setting and every command is documented."""

from __future__ import annotations

import argparse
from pathlib import Path

from monitor_scheduler.cli import build_parser
from core.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    for name in Settings.model_fields:
        assert f"| `{name}` |" in README, f"README settings table lacks {name}"


def test_every_command_is_in_the_readme() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in commands:
        assert f"`{name}" in README, f"README does not document `monitor-scheduler {name}`"
