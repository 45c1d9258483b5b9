"""`schedule preview`: one line per slot, exactly one per calendar occurrence across DST, no database."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from zoneinfo import ZoneInfo

from monitor_scheduler.cli import main

NAMED_ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Pacific/Apia"]


def _preview(capsys: pytest.CaptureFixture[str], *args: str) -> list[tuple[datetime, str]]:
    assert main(["schedule", "preview", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    # "2026-03-29T01:00:00.000Z  Sun 2026-03-29 03:00 CEST (+0200) Europe/Berlin"
    return [(datetime.fromisoformat(line.split()[0].rstrip("Z")), line.split()[2]) for line in lines]


def _just_before_2026(zone: str) -> str:
    return (datetime(2026, 1, 1, tzinfo=ZoneInfo(zone)) - timedelta(minutes=1)).isoformat()


@pytest.mark.parametrize("zone", NAMED_ZONES)
@pytest.mark.parametrize("wall", ["00:00", "01:30", "02:15", "23:30"])  # every zone's gaps and repeats
def test_a_daily_time_runs_once_on_every_day_of_2026_to_2028(capsys, zone: str, wall: str) -> None:
    hour, minute = wall.split(":")
    days = (date(2029, 1, 1) - date(2026, 1, 1)).days
    slots = _preview(capsys, "--cron", f"{int(minute)} {int(hour)} * * *", "--tz", zone,
                     "--from", _just_before_2026(zone), "--count", str(days))
    local_days = [day for _, day in slots]
    expected = [str(date(2026, 1, 1) + timedelta(days=n)) for n in range(days)]
    assert local_days == expected
    instants = [u for u, _ in slots]
    assert instants == sorted(set(instants))


def _changes(zone: str) -> list[datetime]:
    """The UTC days (midnight) before each change of the zone's offset in 2026-2028."""
    tz = ZoneInfo(zone)
    days = [datetime(2026, 1, 1) + timedelta(days=n) for n in range((date(2029, 1, 1) - date(2026, 1, 1)).days + 1)]
    offset = [d.replace(tzinfo=timezone.utc).astimezone(tz).utcoffset() for d in days]
    return [days[n] for n in range(len(days) - 1) if offset[n] != offset[n + 1]]


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "America/Santiago"])
def test_an_hourly_expression_runs_every_real_hour_across_the_changes_of_2026_to_2028(capsys, zone: str) -> None:
    changes = _changes(zone)
    assert len(changes) == 6
    for day in changes:
        slots = _preview(capsys, "--cron", "0 * * * *", "--tz", zone, "--from", f"{day.isoformat()}Z", "--count", "48")
        instants = [u for u, _ in slots]
        assert [b - a for a, b in zip(instants, instants[1:])] == [timedelta(hours=1)] * 47


def test_an_interval_preview_steps_by_the_interval(capsys) -> None:
    slots = _preview(capsys, "--interval", "90", "--from", "2026-03-29T00:00Z", "--count", "3")
    assert [u for u, _ in slots] == [datetime(2026, 3, 29, 1, 30), datetime(2026, 3, 29, 3), datetime(2026, 3, 29, 4, 30)]


@pytest.mark.parametrize("args", [
    ["--cron", "0 0 30 2 *"],
    ["--cron", "0 0 * * * *"],
    ["--cron", "0 9 * * *", "--tz", "Mars/Olympus"],
    ["--cron", "0 9 * * *", "--from", "yesterday"],
    ["--cron", "0 9 * * *", "--count", "0"],
    ["--interval", "0"],
    ["--interval", "5", "--tz", "Europe/Berlin"],
    [],
])
def test_bad_input_exits_2_with_a_message(capsys, args: list[str]) -> None:
    try:
        code = main(["schedule", "preview", *args])
    except SystemExit as exc:  # argparse's own refusals
        code = int(exc.code or 0)
    assert code == 2
    assert capsys.readouterr().err.strip()
