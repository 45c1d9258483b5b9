from __future__ import annotations

import importlib.util

import pytest

from core.domain import Mode
from core.exceptions import ConfigurationError
from core.settings import load_settings


def test_defaults_are_the_embedded_default() -> None:
    s = load_settings(env_file=None)
    assert s.DATABASE_URL == "sqlite:///monitor-scheduler.db"
    assert s.REDIS_URL is None and not s.queue_mode_available
    assert (s.DISPATCH_LOCK_TTL, s.DEFAULT_INTERVAL_MINUTES, s.WORKER_CONCURRENCY) == (900_000, 5, 2)
    assert s.QUEUE_NAME == "monitor-user-tasks"
    assert s.DISPATCH_BATCH_SIZE >= 100_000, "one pass dispatches 100k due users"


@pytest.mark.parametrize("url", ["mysql://u:p@db:3306/app", "mysql+pymysql://u:p@db:3306/app"])
def test_both_mysql_url_spellings_work(url: str) -> None:
    assert load_settings(env_file=None, DATABASE_URL=url).DATABASE_URL == "mysql+pymysql://u:p@db:3306/app"


@pytest.mark.parametrize("url", ["postgresql://u:p@db:5432/app", "postgres://u:p@db:5432/app", "postgresql+psycopg://u:p@db:5432/app"])
def test_postgresql_urls_name_psycopg_3(url: str) -> None:
    assert load_settings(env_file=None, DATABASE_URL=url).DATABASE_URL == "postgresql+psycopg://u:p@db:5432/app"


def test_a_postgresql_url_without_psycopg_is_a_clear_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Given a machine without the `postgres` extra (psycopg not importable), when a command
    starts with a postgresql:// URL, then it exits 2 with one line naming the extra."""
    from monitor_scheduler.cli import main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real_find_spec(name, *a))
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.invalid/app")
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert "DATABASE_URL" in err and "pip install 'monitor-scheduler[postgres]'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "name,value",
    [
        ("DISPATCH_BATCH_SIZE", "abc"),
        ("DISPATCH_BATCH_SIZE", "0"),
        ("DISPATCH_LOCK_TTL", "10"),
        ("DEFAULT_INTERVAL_MINUTES", "1441"),
        ("WORKER_CONCURRENCY", "-1"),
        ("DATABASE_URL", "oracle://x"),
        ("REDIS_URL", "http://x"),
        ("MONITOR_TASK", "no_colon"),
        ("JOB_TIMEOUT", "0"),
        ("RUN_NOW_COOLDOWN", "-1"),
        ("RUN_NOW_COOLDOWN", "one minute"),
        ("RUN_NOW_COOLDOWN", "86401"),
        ("SYNC_THREADS", "0"),
        ("SYNC_THREADS", "257"),
        ("HISTORY_RETENTION_DAYS", "0"),
        ("HISTORY_RETENTION_DAYS", "36501"),
        ("SYNC_THREADS", "many"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        load_settings(env_file=None)


def test_settings_come_from_a_dotenv_file(tmp_path) -> None:
    env = tmp_path / ".env"
    env.write_text("DISPATCH_BATCH_SIZE=20\nREDIS_URL=redis://127.0.0.1:6379/0\n")
    s = load_settings(env_file=env)
    assert (s.DISPATCH_BATCH_SIZE, s.queue_mode_available) == (20, True)


def test_env_example_lists_every_setting() -> None:
    from pathlib import Path

    from core.settings import Settings

    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    for name in Settings.model_fields:
        assert f"{name}=" in example, f".env.example does not list {name}"


@pytest.mark.parametrize("name,short,long", [("SECRET_KEY", "k" * 31, "k" * 32), ("CRON_SECRET", "c" * 15, "c" * 16)])
def test_short_secrets_are_named(name: str, short: str, long: str) -> None:
    assert load_settings(env_file=None, **{name: short}).weak_secrets() == [
        f"invalid setting {name}: must be at least {len(long)} characters (a long random value)"
    ]
    assert load_settings(env_file=None, **{name: long}).weak_secrets() == []


def test_sync_mode_runs_four_at_once_by_default_and_one_on_request() -> None:
    assert load_settings(env_file=None).SYNC_THREADS == 4
    assert load_settings(env_file=None, SYNC_THREADS=1).SYNC_THREADS == 1


def test_run_now_cooldown_defaults_to_a_minute_and_zero_turns_it_off() -> None:
    assert load_settings(env_file=None).RUN_NOW_COOLDOWN == 60
    assert load_settings(env_file=None, RUN_NOW_COOLDOWN="0").RUN_NOW_COOLDOWN == 0


def test_the_default_mode_is_queue_with_redis_and_sync_without() -> None:
    assert load_settings(env_file=None).default_mode is Mode.SYNC
    assert load_settings(env_file=None, REDIS_URL="redis://127.0.0.1:6379/0").default_mode is Mode.QUEUE
