"""The benchmark scripts (scripts/bench/) still run: each in --smoke mode (small N, seconds) as a
subprocess against the session's MariaDB and Redis, exiting 0 and printing its final JSON line
with the expected keys and sane values. Correctness only: no timing target is checked here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.mysql, pytest.mark.redis, pytest.mark.slow]

BENCH = REPO_ROOT / "scripts" / "bench"

# script -> keys its JSON line must carry with a positive number
EXPECTED: dict[str, list[str]] = {
    "dispatch_throughput": ["ours_rows_per_s", "reference_rows_per_s", "ratio"],
    "scale_free": ["small_table_s", "big_table_s", "table_ratio", "last_first_claim_ratio", "batches"],
    "peers": ["rq_scheduler_s", "apscheduler_s", "rq_scheduler_ratio", "apscheduler_ratio"],
    "worker_overhead": ["simple.ours_jobs_per_s", "simple.bare_jobs_per_s", "simple.ratio", "simple.worker_rss_mb", "simple.pool_rss_mb",
                        "fork.ours_jobs_per_s", "fork.bare_jobs_per_s", "fork.ratio", "threaded.ours_jobs_per_s", "threaded.ratio"],
    "lag": ["runs", "expected_runs", "p99_s"],
    "sqlite_sync": ["runs_per_s"],
    "sync_threads": ["pass_s", "serial_s", "ratio", "succeeded"],
    "dispatcher_memory": ["peak_rss_mb", "idle_peak_rss_mb", "enqueued"],
    "overload": ["ratio", "succeeded_in_window", "capacity_runs", "runs_per_user_max"],
    "spreading": ["users", "with_max_over_mean", "without_max_over_mean"],
    "threads_vs_processes": ["threads_jobs_per_s", "processes_jobs_per_s", "rate_ratio", "threads_rss_mb", "processes_rss_mb", "big_rss_mb", "recorded_runs"],
}


def _lookup(data: dict, dotted: str):
    for part in dotted.split("."):
        data = data[part]
    return data


@pytest.fixture(scope="module")
def bench_env(mariadb, redis_server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "DISPATCH_", "MONITOR_TASK"))}
    env["TEST_MYSQL_URL"] = mariadb.admin_url
    env["TEST_REDIS_URL"] = redis_server.url
    env["BENCH_REDIS_DB"] = "9"
    return env


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_benchmark_smoke(script: str, bench_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{script}.py"), "--smoke"],
        cwd=str(REPO_ROOT), env=bench_env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing"
    data = json.loads(lines[-1])
    assert data["bench"] == script and data["smoke"] is True
    assert len(lines) > 1, "the figures are printed as plain lines before the JSON line"
    for key in EXPECTED[script]:
        value = _lookup(data, key)
        assert isinstance(value, (int, float)) and value > 0, f"{script}: {key} = {value!r}"
    if script == "overload":
        assert (data["lost"], data["skipped"], data["exited"]) == (0, 0, 0), data
    if script == "sync_threads":
        assert data["succeeded"] == data["users"] and data["ratio"] < 1, "the runs of one pass overlap"
    if script == "lag":
        assert data["runs"] == data["expected_runs"], data
    if script in ("dispatch_throughput", "dispatcher_memory"):
        assert data.get("due", data.get("enqueued")) > 0


@pytest.mark.postgres
@pytest.mark.parametrize("script", ["dispatch_throughput", "scale_free"])
def test_the_dispatch_benchmarks_run_on_postgresql(script: str, bench_env: dict[str, str], postgres) -> None:
    """--database postgresql: the same figures from the session's PostgreSQL (TEST_POSTGRES_URL)."""
    env = {**bench_env, "TEST_POSTGRES_URL": postgres.admin_url}
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{script}.py"), "--smoke", "--database", "postgresql"],
        cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["database"] == "postgresql" and "postgresql" in data["versions"]
    for key in EXPECTED[script]:
        value = _lookup(data, key)
        assert isinstance(value, (int, float)) and value > 0, f"{script}: {key} = {value!r}"


def test_chaos_soak_smoke() -> None:
    """The chaos soak in --smoke mode: its own MariaDB and Redis (it restarts them, so never the
    session's), real processes, faults; the figures are printed and no process exits by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "DISPATCH_", "MONITOR_TASK", "TEST_MYSQL_URL", "TEST_REDIS_URL"))}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "chaos.py"), "--smoke"], cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, f"chaos exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    data = json.loads(lines[-1])
    assert data["bench"] == "chaos" and data["smoke"] is True
    for figure in ("faults injected", "overlapping executions", "slots run twice", "finished runs with no recorded result",
                   "history rows with no execution", "jobs in RQ's failed registry", "processes that exited by themselves",
                   "largest gap between two runs of one user"):
        assert any(line.startswith(figure + ":") for line in lines), figure
    assert data["faults"] > 0 and data["executions"] > 0, proc.stderr[-3000:]
    assert data["exited_by_themselves"] == 0, data["exits"]
    assert data["history_without_execution"] == 0
    assert data["unrecorded_finished"] == data["unrecorded_finished_killed"], "a finished run's result was lost to an outage"
