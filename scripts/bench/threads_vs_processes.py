#!/usr/bin/env python3
"""Benchmark 9: many runs at once in one process (threads) vs one process per run (RQ's WorkerPool).

The task sleeps SLEEP seconds (an I/O-bound monitoring run). Both sides run the same jobs, JOBS due
schedules dispatched by our dispatcher (RUNS at once, JOBS / RUNS waves):
  threads:   `monitor-scheduler worker --concurrency 1 --threads RUNS` (one process);
  processes: `monitor-scheduler worker --concurrency RUNS` (RQ's WorkerPool: RUNS processes + parent).
Throughput is JOBS / (last job's ended_at - first job's started_at) from RQ's own job hashes, so
process start-up is not counted; memory is the peak, while the runs are in flight, of the RSS summed
over the worker processes (VmRSS from /proc, sampled every 0.2 s). Then BIG sleeping runs at once in
one process with BIG threads: its peak RSS.

    python scripts/bench/threads_vs_processes.py        # 50 at once, 150 jobs of 2 s; 200 at once in one process
    python scripts/bench/threads_vs_processes.py --smoke
Targets: threads throughput >= 0.95x the pool's with <= 1/10 of its memory; BIG=200 runs <= 150 MB.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from redis import Redis  # noqa: E402
from rq import Queue  # noqa: E402
from sqlalchemy import Engine  # noqa: E402

from core.clock import DatabaseClock  # noqa: E402
from core.settings import Settings  # noqa: E402
from dispatcher.service import Dispatcher  # noqa: E402


def fill(engine: Engine, settings: Settings, redis_conn: Redis, jobs: int) -> int:
    dispatcher = Dispatcher.for_queue(settings.model_copy(update={"DISPATCH_BATCH_SIZE": jobs}), engine, DatabaseClock(), redis_conn)
    return dispatcher.tick().enqueued


def run_side(url: str, redis_url: str, redis_conn: Redis, *, jobs: int, processes: int, threads: int, sleep: float, timeout: float) -> dict[str, Any]:
    env = common.child_env(
        DATABASE_URL=url, REDIS_URL=redis_url, QUEUE_NAME=common.QUEUE, MONITOR_TASK="bench_tasks:sleep_task",
        LOG_LEVEL="WARNING", DISPATCH_LOCK_TTL="900000", BENCH_SLEEP=str(sleep),
    )
    env["PYTHONPATH"] = str(common.BENCH_DIR) + os.pathsep + env["PYTHONPATH"]
    queue = Queue(common.QUEUE, connection=redis_conn)
    finished_key, failed_key = queue.finished_job_registry.key, queue.failed_job_registry.key
    proc = subprocess.Popen(
        [common.PYTHON, "-m", "monitor_scheduler.cli", "worker", "--concurrency", str(processes), "--threads", str(threads)],
        env=env, cwd=str(common.REPO_ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    peak_rss = 0.0
    peak_processes = 0
    try:
        deadline = time.monotonic() + timeout
        while True:
            pids = [proc.pid] + common.children_of(proc.pid)
            workers = [p for p in pids if p != proc.pid] if processes > 1 else [proc.pid]
            rss = sum(common.rss_mb(p) for p in workers)
            if rss > peak_rss:
                peak_rss, peak_processes = rss, len(workers)
            done = redis_conn.zcard(finished_key) + redis_conn.zcard(failed_key)
            if done >= jobs:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"workers exited {proc.returncode}: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done}/{jobs} jobs done after {timeout}s")
            time.sleep(0.2)
    finally:
        common.stop_process(proc, timeout=60)
    failed = redis_conn.zcard(failed_key)
    times = common.finished_job_times(redis_conn, finished_key)
    starts = [start for start, _ in times if start]
    ends = [end for _, end in times if end]
    span = (max(ends) - min(starts)).total_seconds()
    return {"jobs": len(times), "failed": int(failed), "span_s": span, "rate": len(times) / span, "peak_rss_mb": peak_rss, "processes": peak_processes}


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=50, help="runs at once on each side")
    parser.add_argument("--waves", type=int, default=3, help="jobs = runs x waves")
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds each run sleeps")
    parser.add_argument("--big", type=int, default=200, help="runs at once in one process for the memory figure")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.waves, args.sleep, args.big = 4, 2, 0.5, 8
    repeat = args.repeat or 1
    jobs = args.runs * args.waves
    users = max(jobs, args.big)
    timeout = 120 if args.smoke else 600

    results: dict[str, list[dict[str, Any]]] = {"threads": [], "processes": []}
    with common.servers() as srv:
        versions = srv.versions()
        url = common.new_database(srv.mariadb, "bench_threads")
        engine = common.sqlalchemy_engine(url)
        base = common.db_now(engine)
        common.seed_schedules(srv.mariadb, url, total=users, due=users, base=base)
        settings = common.settings_for(url, srv.redis_url)
        redis_conn = Redis.from_url(srv.redis_url)

        def side(n_jobs: int, processes: int, threads: int) -> dict[str, Any]:
            common.flush_redis(srv.redis_url)
            common.reset_claimed(srv.mariadb, url, total=users, due=users, base=base)
            assert fill(engine, settings, redis_conn, n_jobs) == n_jobs
            r = run_side(url, srv.redis_url, redis_conn, jobs=n_jobs, processes=processes, threads=threads, sleep=args.sleep, timeout=timeout)
            assert r["failed"] == 0 and r["jobs"] == n_jobs, r
            return r

        for round_ in range(repeat):
            order = ["threads", "processes"] if round_ % 2 == 0 else ["processes", "threads"]
            for which in order:
                r = side(jobs, 1, args.runs) if which == "threads" else side(jobs, args.runs, 1)
                common.log(f"round {round_ + 1} {which}: {r['rate']:.2f} jobs/s, peak RSS {r['peak_rss_mb']:.1f} MB over {r['processes']} processes")
                results[which].append(r)
        big = side(args.big, 1, args.big) if args.big > 1 else None
        if big:
            common.log(f"{args.big} at once in one process: {big['rate']:.2f} jobs/s, peak RSS {big['peak_rss_mb']:.1f} MB")
        ran = srv.mariadb.execute("SELECT COUNT(*) FROM UserMonitorRun WHERE status = 'succeeded'", database=url.rsplit("/", 1)[1])[0][0]
        redis_conn.close()
        engine.dispose()
        srv.mariadb.drop_database(url.rsplit("/", 1)[1])

    threads_rate = common.median([r["rate"] for r in results["threads"]])
    pool_rate = common.median([r["rate"] for r in results["processes"]])
    threads_rss = max(r["peak_rss_mb"] for r in results["threads"])
    pool_rss = max(r["peak_rss_mb"] for r in results["processes"])
    ideal = args.runs / args.sleep
    rate_ratio, memory_ratio = threads_rate / pool_rate, threads_rss / pool_rss
    common.figure("runs at once / jobs per side / sleep", f"{args.runs} / {jobs} / {args.sleep} s")
    common.figure("threads: jobs/s (1 process)", threads_rate, f"(ideal {ideal:.1f})")
    common.figure("processes: jobs/s (WorkerPool)", pool_rate, f"(ideal {ideal:.1f})")
    common.figure("throughput threads/processes", rate_ratio, "x (target >= 0.95)")
    common.figure("threads: peak RSS", threads_rss, "MB (1 process)")
    common.figure("processes: peak RSS summed", pool_rss, f"MB ({max(r['processes'] for r in results['processes'])} processes)")
    common.figure("memory threads/processes", memory_ratio, "x (target <= 0.1)")
    targets_met = rate_ratio >= 0.95 and memory_ratio <= 0.1
    out: dict[str, object] = {
        "smoke": args.smoke, "runs": args.runs, "jobs": jobs, "sleep_s": args.sleep, "repeat": repeat, "versions": versions,
        "threads_jobs_per_s": round(threads_rate, 2), "processes_jobs_per_s": round(pool_rate, 2), "rate_ratio": round(rate_ratio, 3),
        "threads_rss_mb": round(threads_rss, 1), "processes_rss_mb": round(pool_rss, 1), "memory_ratio": round(memory_ratio, 4),
        "recorded_runs": int(ran),
    }
    if big:
        common.figure(f"{args.big} runs at once in one process: peak RSS", big["peak_rss_mb"], "MB (target <= 150)")
        common.figure(f"{args.big} runs at once in one process: jobs/s", big["rate"], f"(ideal {args.big / args.sleep:.1f})")
        out.update({"big_runs": args.big, "big_rss_mb": round(big["peak_rss_mb"], 1), "big_jobs_per_s": round(big["rate"], 2)})
        targets_met = targets_met and big["peak_rss_mb"] <= 150
    common.figure("targets met", "yes" if targets_met else "no")
    out["target_met"] = targets_met
    common.emit("threads_vs_processes", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
