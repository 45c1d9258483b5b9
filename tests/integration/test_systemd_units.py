"""The systemd units in deploy/systemd/: what operators rely on, and `systemd-analyze verify`.

The units name /srv/app; for `verify` they are copied into a temporary directory with /srv/app
rewritten to a stand-in project there (an executable `.venv/bin/monitor-scheduler`, the real
scripts/cron-dispatch, an `.env`), because verify checks that every ExecStart= command exists.
Any warning verify prints about our units fails the test, not only its exit code.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from monitor_scheduler.cli import build_parser
from tests.conftest import REPO_ROOT

UNITS_DIR = REPO_ROOT / "deploy" / "systemd"
APP = "/srv/app"
JOB_TIMEOUT_DEFAULT = 600
UNITS = [
    "monitor-scheduler-web.service",
    "monitor-scheduler-worker@.service",
    "monitor-scheduler-dispatch.service",
    "monitor-scheduler-dispatch.timer",
    "monitor-scheduler-dispatcher.service",
]


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (systemd allows a key more than once)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}: expected one value, got {values}"
    return values[0]


def seconds(value: str) -> float:
    """A systemd time span: `660`, `11min`, `1min 30s`, `90s`."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


def default_environment(unit: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in unit["Service"].get("Environment", []):
        for assignment in shlex.split(value):
            name, _, val = assignment.partition("=")
            env[name] = val
    return env


def test_the_units_are_all_there() -> None:
    assert sorted(p.name for p in UNITS_DIR.iterdir()) == sorted(UNITS)


@pytest.mark.parametrize("name", [u for u in UNITS if u.endswith(".service")])
def test_services_run_the_project_from_srv_app_as_a_dedicated_user(name: str) -> None:
    unit = parse_unit(UNITS_DIR / name)
    assert one(unit, "Service", "WorkingDirectory") == APP
    assert one(unit, "Service", "EnvironmentFile") == f"{APP}/.env"
    user = one(unit, "Service", "User")
    assert user not in ("root", "0") and one(unit, "Service", "Group") == user
    exec_start = shlex.split(one(unit, "Service", "ExecStart"))
    if name == "monitor-scheduler-dispatch.service":
        assert exec_start == [f"{APP}/scripts/cron-dispatch"]
        assert one(unit, "Service", "Type") == "oneshot"
        return
    assert exec_start[0] == f"{APP}/.venv/bin/monitor-scheduler"
    # The arguments are ones the CLI accepts (with the unit's default ${VAR}s filled in).
    env = default_environment(unit)
    args = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], arg) for arg in exec_start[1:]]
    build_parser().parse_args(args)
    assert one(unit, "Service", "KillSignal") == "SIGTERM"


def test_a_worker_stop_waits_for_the_running_job() -> None:
    unit = parse_unit(UNITS_DIR / "monitor-scheduler-worker@.service")
    assert shlex.split(one(unit, "Service", "ExecStart"))[1:] == ["worker", "--concurrency", "1"]
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    assert one(unit, "Service", "KillMode") == "mixed", "SIGTERM to the worker only, not to a fork-class job process"
    assert seconds(one(unit, "Service", "TimeoutStopSec")) >= JOB_TIMEOUT_DEFAULT


def test_the_timer_starts_a_dispatch_pass_every_minute() -> None:
    timer = parse_unit(UNITS_DIR / "monitor-scheduler-dispatch.timer")
    assert one(timer, "Timer", "Unit") == "monitor-scheduler-dispatch.service"
    assert one(timer, "Timer", "OnCalendar") == "*-*-* *:*:00"
    assert one(timer, "Install", "WantedBy") == "timers.target"
    loop = parse_unit(UNITS_DIR / "monitor-scheduler-dispatcher.service")
    assert shlex.split(one(loop, "Service", "ExecStart"))[1:] == ["dispatch", "--loop", "--every", "10s"]


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd); the static checks above still ran")
    app = tmp_path / "app"
    (app / ".venv" / "bin").mkdir(parents=True)
    stub = app / ".venv" / "bin" / "monitor-scheduler"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    (app / "scripts").mkdir()
    shutil.copy2(REPO_ROOT / "scripts" / "cron-dispatch", app / "scripts" / "cron-dispatch")
    (app / ".env").write_text("DATABASE_URL=sqlite:///monitor-scheduler.db\n")
    units = tmp_path / "units"
    units.mkdir()
    for name in UNITS:
        (units / name).write_text((UNITS_DIR / name).read_text().replace(APP, str(app)))
    # The template is verified through an instance (verify loads monitor-scheduler-worker@.service).
    targets = [str(units / n.replace("@.service", "@1.service")) for n in UNITS]

    result = subprocess.run(
        [analyze, "verify", "--man=no", *targets], cwd=units, capture_output=True, text=True, timeout=120
    )

    output = (result.stdout + result.stderr).strip()
    ours = [line for line in output.splitlines() if str(tmp_path) in line or "monitor-scheduler" in line]
    assert result.returncode == 0 and not ours, f"systemd-analyze verify (exit {result.returncode}):\n{output}"
