"""What operators load as they are: deploy/prometheus/alerts.yml (checked and unit-tested with the
real promtool) and deploy/grafana/monitor-scheduler.json, both only naming metrics the project
exports: the names are read from the /metrics of a real app in queue mode with a live worker, a
finished run and a dispatch pass, so renaming a metric fails here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Queue, Worker

from core import writes
from core.domain import RunRecord
from tests import servers
from tests.conftest import REPO_ROOT, Backend
from tests.web.conftest import WebHarness, make_harness

RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "monitor-scheduler.json"
METRIC = re.compile(r"\bmonitor_scheduler_[a-z_]+\b")


def promtool() -> str:
    """The real promtool (Debian's `prometheus` package, installed by scripts/install-test-deps);
    missing, it fails the run unless MONITOR_ALLOW_MISSING_SERVERS=1 outside CI, as the servers do."""
    found = shutil.which("promtool")
    if found:
        return found
    reason = "promtool not found: run scripts/install-test-deps (Debian package `prometheus`)"
    if servers.missing_servers_allowed():
        pytest.skip(reason)
    pytest.fail(f"{reason}, or set MONITOR_ALLOW_MISSING_SERVERS=1 (outside CI) to skip", pytrace=False)


@pytest.fixture
def scraped(sqlite_backend: Backend, redis_url: str, redis_conn: Redis) -> Iterator[str]:
    """The /metrics text of a queue-mode app with everything a scrape can show."""
    web = make_harness(sqlite_backend, REDIS_URL=redis_url)
    worker = Worker([Queue(web.app.settings.QUEUE_NAME, connection=redis_conn)], connection=redis_conn, name="live")
    worker.register_birth()
    at = sqlite_backend.clock.moment - timedelta(minutes=1)
    sqlite_backend.add_schedules(3)
    with sqlite_backend.engine.begin() as conn:
        writes.insert_runs(conn, [RunRecord("user-000000", "schedule", at, 1, "t", "failed", "down", 0, None, at, at, 1500, "w")])
    assert web.cron({}).status_code == 200
    yield web.client.get("/metrics").text
    web.client.close()
    web.app.close()


def exported(text: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def assert_all_exported(expressions: list[tuple[str, str]], scraped: str) -> None:
    """Each expression reads at least one of our metrics, and only names /metrics exports."""
    names = exported(scraped)
    for where, expr in expressions:
        used = set(METRIC.findall(expr))
        assert used, f"{where} reads no monitor_scheduler metric"
        assert used <= names, f"{where} reads metrics /metrics does not export: {sorted(used - names)}"


def rule_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = [(f"variable {v['name']}", v["query"]) for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])] + variables


# --- alert rules -------------------------------------------------------------------------------


def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_on_made_up_series_in_promtools_rule_tests() -> None:
    result = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    tested = {case["alertname"] for case in cases if case["exp_alerts"]}
    assert {name for name, _ in rule_expressions()} <= tested, "every alert has a unit test in which it fires"


def test_every_alert_says_what_to_look_at() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        assert re.search(r"/admin|`?check`?|docs/", annotations["description"]), f"{rule['alert']}: name the admin page, `check` or a docs section"


@pytest.mark.redis
def test_every_metric_in_the_alert_rules_is_exported(scraped: str) -> None:
    assert_all_exported(rule_expressions(), scraped)


# --- the dashboard -----------------------------------------------------------------------------


@pytest.mark.redis
def test_every_metric_on_the_dashboard_is_exported(scraped: str) -> None:
    expressions = dashboard_expressions()
    titles = " ".join(title for title, _ in expressions).lower()
    for topic in ("needed vs available", "backlog", "expected wait", "lag", "outcomes by status and trigger", "durations", "queue depth"):
        assert topic in titles, f"the dashboard has no panel on {topic}"
    assert_all_exported(expressions, scraped)


@pytest.mark.redis
def test_the_scrape_behind_these_checks_shows_every_metric_family(scraped: str) -> None:
    names = exported(scraped)
    for expected in ("monitor_scheduler_queue_depth", "monitor_scheduler_expected_wait_seconds", "monitor_scheduler_recent_runs",
                     "monitor_scheduler_last_dispatch_pass_timestamp_seconds", "monitor_scheduler_recent_run_duration_seconds_bucket"):
        assert expected in names
