#!/usr/bin/env python3
"""Benchmark 8: demand above capacity, long runs on few workers (issue 9's scenario).

USERS schedules due every minute, a task that sleeps TASK seconds, WORKERS single-process workers
(capacity WORKERS x 60 / TASK runs a minute, below the demand of USERS a minute), a lease of
LEASE ms far shorter than the queue wait, and `dispatch --loop --every PERIOD`, for DURATION
seconds. Reported from the run history and the task's own log of executions: succeeded runs
divided by capacity (what the workers could have done in the window), runs recorded lost and
skipped, runs per user (min / max), and the most jobs the queue held.
Targets: >= 0.95 of capacity, 0 lost, 0 skipped, max - min <= 1.

    python scripts/bench/overload.py             # 40 users, 3 s task, 1 worker, 15 s lease, 3 minutes
    python scripts/bench/overload.py --smoke     # 6 users, 0.5 s task, 10 s (checks the script runs)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[1])
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--task", type=float, default=3.0, help="seconds each run takes")
    parser.add_argument("--workers", type=int, default=1, help="single-process workers")
    parser.add_argument("--lease", type=int, default=15_000, help="DISPATCH_LOCK_TTL in ms")
    parser.add_argument("--period", default="5s", help="dispatcher loop period (--every)")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds measured")
    args = parser.parse_args()
    if args.smoke:
        args.users, args.task, args.duration, args.period = 6, 0.5, 10.0, "1s"

    with common.servers() as srv, tempfile.TemporaryDirectory() as test_dir:
        versions = srv.versions()
        url = common.new_database(srv.mariadb, "bench_overload")
        database = url.rsplit("/", 1)[1]
        engine = common.sqlalchemy_engine(url)
        start = common.db_now(engine)
        engine.dispose()
        common.seed_schedules(srv.mariadb, url, total=args.users, base=start, interval=1, next_run="@base + INTERVAL seq * 1000 MICROSECOND")
        common.flush_redis(srv.redis_url)
        env = common.child_env(
            DATABASE_URL=url, REDIS_URL=srv.redis_url, QUEUE_NAME=common.QUEUE, MONITOR_TASK="tests.tasks:sleeping_task",
            MONITOR_TEST_DIR=test_dir, MONITOR_TEST_SLEEP=str(args.task), DISPATCH_LOCK_TTL=str(args.lease),
            JOB_TIMEOUT="600", LOG_LEVEL="WARNING",
        )
        cli = [common.PYTHON, "-m", "monitor_scheduler.cli"]

        def start_cli(*arguments: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [*cli, *arguments],
                env=env, cwd=str(common.REPO_ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )

        procs = [start_cli("worker", "--concurrency", "1") for _ in range(args.workers)]
        procs.append(start_cli("dispatch", "--loop", "--every", args.period, "--mode", "queue"))
        from redis import Redis
        from rq import Queue

        redis = Redis.from_url(srv.redis_url)
        queue = Queue(common.QUEUE, connection=redis)
        most_queued = 0
        exited: list[str] = []
        try:
            common.log(f"{args.users} users every minute, {args.task:g} s task, {args.workers} worker(s), lease {args.lease} ms, {args.duration:.0f} s")
            deadline = time.monotonic() + args.duration
            while time.monotonic() < deadline:
                exited += [str(p.args) for p in procs if p.poll() is not None]
                most_queued = max(most_queued, queue.count)
                time.sleep(0.5)
        finally:
            for proc in reversed(procs):
                common.stop_process(proc)
            redis.close()
        statuses = dict(srv.mariadb.execute("SELECT status, COUNT(*) FROM UserMonitorRun GROUP BY status", database=database))
        in_window = srv.mariadb.execute(
            "SELECT COUNT(*) FROM UserMonitorRun WHERE status = 'succeeded' AND startedAt < %s + INTERVAL %s MICROSECOND",
            (start, int(args.duration * 1e6)), database=database,
        )[0][0]
        srv.mariadb.drop_database(database)
        executions = Counter(line.split()[0] for line in (Path(test_dir) / "runs.log").read_text().splitlines()) if (Path(test_dir) / "runs.log").exists() else Counter()

    capacity = args.workers * args.duration / args.task
    per_user = [executions.get(common.user_id(i), 0) for i in range(1, args.users + 1)] if executions else [0]
    ratio = in_window / capacity
    lost, skipped = int(statuses.get("lost", 0)), int(statuses.get("skipped", 0))
    spread = max(per_user) - min(per_user)
    common.figure("users / task / workers / lease", f"{args.users} every minute / {args.task:g} s / {args.workers} / {args.lease} ms")
    common.figure("demand / capacity", f"{args.users} / {args.workers * 60 / args.task:g} runs a minute")
    common.figure("succeeded in window / capacity", f"{in_window} / {capacity:.0f} = {ratio:.3f} (target >= 0.95)")
    common.figure("lost / skipped", f"{lost} / {skipped} (target 0 / 0)")
    common.figure("runs per user min / max", f"{min(per_user)} / {max(per_user)} (target max - min <= 1)")
    common.figure("most jobs in the queue", f"{most_queued} (users: {args.users})")
    common.figure("processes that exited by themselves", len(set(exited)))
    target_met = ratio >= 0.95 and lost == 0 and skipped == 0 and spread <= 1 and not exited
    common.emit(
        "overload",
        {
            "smoke": args.smoke, "users": args.users, "task_s": args.task, "workers": args.workers, "lease_ms": args.lease,
            "duration_s": args.duration, "succeeded_in_window": in_window, "capacity_runs": round(capacity, 1),
            "ratio": round(ratio, 3), "lost": lost, "skipped": skipped, "runs_per_user_min": min(per_user),
            "runs_per_user_max": max(per_user), "most_queued": most_queued, "exited": len(set(exited)),
            "target_met": (target_met if not args.smoke else None), "versions": versions,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
