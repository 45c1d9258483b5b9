#!/usr/bin/env python3
"""Benchmark 5: lag of run start behind its slot, with the dispatcher loop and enough workers.

USERS schedules at a 1-minute interval, their first slots spread evenly over one minute starting
a few seconds after the processes are up; `monitor-scheduler dispatch --loop --every PERIOD` and
`monitor-scheduler worker --concurrency WORKERS` (SimpleWorker) run for DURATION seconds. Lag of a
run = startedAt - slot from the run history (startedAt is the database time of the lease check that
starts the run). Reported: p50 / p99 / max, and how many of the expected runs happened.
Target: p99 <= PERIOD + 1 s.

    python scripts/bench/lag.py                  # 10,000 users, 3 minutes, loop every 1 s, 4 workers
    python scripts/bench/lag.py --smoke          # 120 users, 6 s
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[1])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of slots measured")
    parser.add_argument("--period", default="1s", help="dispatcher loop period (--every)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--worker-class", default="simple")
    args = parser.parse_args()
    if args.smoke:
        args.users, args.duration, args.workers = 120, 6.0, 2
    from dispatcher.loop import parse_duration

    period = parse_duration(args.period)
    lead_s = 4.0  # processes start before the first slot

    with common.servers() as srv:
        versions = srv.versions()
        url = common.new_database(srv.mariadb, "bench_lag")
        database = url.rsplit("/", 1)[1]
        engine = common.sqlalchemy_engine(url)
        first_slot = common.db_now(engine) + timedelta(seconds=lead_s)
        engine.dispose()
        # slots spread evenly over the minute: user i first runs at first_slot + i * 60 s / USERS
        common.seed_schedules(
            srv.mariadb, url, total=args.users, base=first_slot, interval=1,
            next_run=f"@base + INTERVAL ((seq - 1) * 60000000 DIV {args.users}) MICROSECOND",
        )
        common.flush_redis(srv.redis_url)

        env = common.child_env(
            DATABASE_URL=url, REDIS_URL=srv.redis_url, QUEUE_NAME=common.QUEUE, MONITOR_TASK="worker.tasks:noop_task",
            LOG_LEVEL="WARNING", DISPATCH_LOCK_TTL="900000",
        )
        cli = [common.PYTHON, "-m", "monitor_scheduler.cli"]
        procs = [
            subprocess.Popen([*cli, "worker", "--concurrency", str(args.workers), "--worker-class", args.worker_class],
                             env=env, cwd=str(common.REPO_ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True),
            subprocess.Popen([*cli, "dispatch", "--loop", "--every", args.period, "--mode", "queue"],
                             env=env, cwd=str(common.REPO_ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True),
        ]
        try:
            end_wait = lead_s + args.duration + period + (2.0 if args.smoke else 5.0)
            common.log(f"running {args.users} users at 1-minute intervals for {args.duration:.0f}s (+{end_wait - args.duration:.0f}s lead/drain)")
            deadline = time.monotonic() + end_wait
            while time.monotonic() < deadline:
                for proc in procs:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{proc.args!r} exited {proc.returncode}")
                time.sleep(0.5)
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            for proc in reversed(procs):
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()
        window_end = first_slot + timedelta(seconds=args.duration)
        rows = srv.mariadb.execute(
            "SELECT TIMESTAMPDIFF(MICROSECOND, slot, startedAt), status FROM UserMonitorRun "
            "WHERE `trigger` = 'schedule' AND slot >= %s AND slot < %s",
            (first_slot, window_end), database=database,
        )
        skipped_slots = srv.mariadb.execute("SELECT COALESCE(SUM(skippedSlots), 0) FROM UserMonitorRun", database=database)[0][0]
        srv.mariadb.drop_database(database)

    lags = [r[0] / 1e6 for r in rows if r[0] is not None]
    succeeded = sum(1 for r in rows if r[1] == "succeeded")
    expected = 0
    for i in range(args.users):
        offset = i * 60.0 / args.users
        expected += int((args.duration - offset + 59.999999) // 60) if offset < args.duration else 0
    p50, p99 = common.percentile(lags, 50), common.percentile(lags, 99)
    common.figure("users / interval / duration", f"{args.users} / 1 min / {args.duration:.0f} s")
    common.figure("loop period / workers", f"{period:g} s / {args.workers} x {args.worker_class}")
    common.figure("runs in window (expected)", f"{len(lags)} ({expected}), succeeded {succeeded}, skipped slots {skipped_slots}")
    common.figure("lag p50", p50, "s")
    common.figure("lag p99", p99, f"s (target <= {period + 1:g})")
    common.figure("lag max", max(lags) if lags else float("nan"), "s")
    common.emit(
        "lag",
        {
            "smoke": args.smoke, "users": args.users, "duration_s": args.duration, "period_s": period, "workers": args.workers,
            "worker_class": args.worker_class, "runs": len(lags), "expected_runs": expected, "succeeded": succeeded,
            "skipped_slots": int(skipped_slots), "p50_s": round(p50, 3), "p99_s": round(p99, 3),
            "max_s": round(max(lags), 3) if lags else None, "target_met": p99 <= period + 1 and len(lags) == expected,
            "versions": versions,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
