#!/usr/bin/env python3
"""Benchmark 4: worker overhead of our job vs bare RQ no-op jobs, per worker class; worker RSS.

For each worker class (rq.SimpleWorker = `simple`, fork-per-job rq.Worker = `fork`, our
worker.threaded.ThreadedWorker with one thread = `threaded`, started by threaded_worker.py):
  ours: JOBS due schedules dispatched by our dispatcher, run by `monitor-scheduler worker` with
        MONITOR_TASK=worker.tasks:noop_task (lease check, heartbeat thread, fenced finish + history);
  bare: JOBS plain RQ jobs of the same no-op function (worker.tasks.noop_task), by default run by
        RQ's own command (`rq worker-pool -w bench_tasks.BareSimpleWorker`: rq.SimpleWorker exiting
        promptly, or BareForkWorker for `fork`;
        `rq worker` for one process): bare RQ, the reference the issue targets name. With
        `--bare-worker ours` they run on our worker command instead (same class and concurrency;
        for `threaded`: our simple class), which isolates what our job adds from what our worker
        loop adds.
The queue is filled first, then the workers start; throughput is JOBS / (last job's ended_at -
first job's started_at) from RQ's own job hashes, so process start-up is not counted. Rounds
alternate which side goes first; medians. After the last job the pool idles for 2 s and the RSS of
each worker process and of the pool (parent + workers) is read from /proc.

    python scripts/bench/worker_overhead.py                 # simple, threaded: 5,000 jobs x3 rounds; fork: 1,000 jobs x1; 2 workers
    python scripts/bench/worker_overhead.py --smoke
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

from dispatcher.service import Dispatcher  # noqa: E402
from core.clock import DatabaseClock  # noqa: E402
from core.settings import Settings  # noqa: E402


def fill_ours(engine: Engine, settings: Settings, redis_conn: Redis) -> int:
    dispatcher = Dispatcher.for_queue(settings, engine, DatabaseClock(), redis_conn)
    return dispatcher.tick().enqueued


def fill_bare(redis_conn: Redis, jobs: int) -> int:
    queue = Queue(common.QUEUE, connection=redis_conn)
    for start in range(0, jobs, 1000):
        datas = [Queue.prepare_data("worker.tasks.noop_task", args=(common.user_id(i), None), timeout=600) for i in range(start, min(jobs, start + 1000))]
        with redis_conn.pipeline() as pipe:
            queue.enqueue_many(datas, pipeline=pipe)
            pipe.execute()
    return jobs


# RQ's classes, but for a prompt exit (bench_tasks.BareSimpleWorker says why): no step of a job differs.
RQ_CLASSES = {"simple": "bench_tasks.BareSimpleWorker", "fork": "bench_tasks.BareForkWorker", "threaded": "bench_tasks.BareSimpleWorker"}


def bare_rq_command(redis_url: str, worker_class: str, concurrency: int) -> list[str]:
    """RQ's own worker command: no class, connection or setting of ours."""
    rq = str(Path(common.PYTHON).with_name("rq"))
    options = ["-w", RQ_CLASSES[worker_class], "-u", redis_url, "-P", str(common.REPO_ROOT), "-P", str(common.BENCH_DIR), "-q"]
    if concurrency == 1:
        return [rq, "worker", *options, common.QUEUE]
    return [rq, "worker-pool", "-n", str(concurrency), *options, common.QUEUE]


def run_workers(url: str, redis_url: str, redis_conn: Redis, *, jobs: int, worker_class: str, concurrency: int, timeout: float,
                threads: int = 1, bare_rq: bool = False) -> dict[str, Any]:
    env = common.child_env(
        DATABASE_URL=url, REDIS_URL=redis_url, QUEUE_NAME=common.QUEUE, MONITOR_TASK="worker.tasks:noop_task",
        LOG_LEVEL="WARNING", DISPATCH_LOCK_TTL="900000",
    )
    queue = Queue(common.QUEUE, connection=redis_conn)
    finished_key, failed_key = queue.finished_job_registry.key, queue.failed_job_registry.key
    t0 = time.perf_counter()
    if bare_rq:
        command = bare_rq_command(redis_url, worker_class, concurrency)
    elif worker_class == "threaded":
        command = [common.PYTHON, str(common.BENCH_DIR / "threaded_worker.py"), str(concurrency), str(threads)]
    else:
        command = [common.PYTHON, "-m", "monitor_scheduler.cli", "worker", "--concurrency", str(concurrency), "--worker-class", worker_class]
    proc = subprocess.Popen(
        command,
        env=env, cwd=str(common.REPO_ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            done = redis_conn.zcard(finished_key) + redis_conn.zcard(failed_key)
            if done >= jobs:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"workers exited {proc.returncode}: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done}/{jobs} jobs done after {timeout}s")
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        time.sleep(2.0)  # idle
        pids = [proc.pid] + common.children_of(proc.pid)
        rss = {pid: common.rss_mb(pid) for pid in pids}
    finally:
        common.stop_process(proc)
    failed = redis_conn.zcard(failed_key)
    times = common.finished_job_times(redis_conn, finished_key)
    starts = [start for start, _ in times if start]
    ends = [end for _, end in times if end]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else wall
    workers = [pid for pid in pids if pid != proc.pid] if concurrency > 1 else [proc.pid]
    return {
        "jobs": len(times), "failed": int(failed), "span_s": span, "rate": len(times) / span if span else 0.0, "wall_s": wall,
        "worker_rss_mb": max(rss[p] for p in workers), "pool_rss_mb": sum(rss.values()), "processes": len(pids),
    }


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[1])
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--classes", default="simple,threaded,fork")
    parser.add_argument("--threads", type=int, default=1, help="threads per process of the `threaded` class (default 1)")
    parser.add_argument("--fork-repeat", type=int, default=None, help="rounds for the fork class (default 1: it is slow)")
    parser.add_argument("--fork-jobs", type=int, default=1_000, help="jobs per side for the fork class (default 1,000: a fork per job is slow)")
    parser.add_argument("--bare-worker", choices=["rq", "ours"], default="rq",
                        help="what runs the bare jobs: RQ's own `rq worker` command (default) or our worker command")
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.fork_jobs, args.concurrency = 40, 10, 1
    repeat = args.repeat or (1 if args.smoke else 3)
    fork_repeat = args.fork_repeat or 1

    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with common.servers() as srv:
        versions = srv.versions()
        url = common.new_database(srv.mariadb, "bench_worker")
        engine = common.sqlalchemy_engine(url)
        base = common.db_now(engine)
        common.seed_schedules(srv.mariadb, url, total=args.jobs, due=args.jobs, base=base)
        settings = common.settings_for(url, srv.redis_url)
        redis_conn = Redis.from_url(srv.redis_url)
        for worker_class in args.classes.split(","):
            results[worker_class] = {"ours": [], "bare": []}
            rounds = fork_repeat if worker_class == "fork" else repeat
            jobs = min(args.jobs, args.fork_jobs) if worker_class == "fork" else args.jobs
            for round_ in range(rounds):
                order = ["ours", "bare"] if round_ % 2 == 0 else ["bare", "ours"]
                for which in order:
                    common.flush_redis(srv.redis_url)
                    common.reset_claimed(srv.mariadb, url, total=args.jobs, due=args.jobs, base=base)
                    filled = fill_ours(engine, settings.model_copy(update={"DISPATCH_BATCH_SIZE": jobs}), redis_conn) if which == "ours" else fill_bare(redis_conn, jobs)
                    assert filled == jobs, filled
                    side_class = "simple" if (worker_class, which) == ("threaded", "bare") else worker_class
                    r = run_workers(url, srv.redis_url, redis_conn, jobs=jobs, worker_class=side_class,
                                    concurrency=args.concurrency, timeout=120 if args.smoke else 900, threads=args.threads,
                                    bare_rq=which == "bare" and args.bare_worker == "rq")
                    assert r["failed"] == 0 and r["jobs"] == jobs, r
                    if which == "ours":
                        ran = srv.mariadb.execute("SELECT COUNT(*) FROM UserMonitorRun WHERE status = 'succeeded'", database=url.rsplit("/", 1)[1])[0][0]
                        assert ran == jobs, ran
                    common.log(f"{worker_class} round {round_ + 1} {which}: {r['rate']:.0f} jobs/s, worker RSS {r['worker_rss_mb']:.1f} MB, pool {r['pool_rss_mb']:.1f} MB")
                    results[worker_class][which].append(r)
        redis_conn.close()
        engine.dispose()
        srv.mariadb.drop_database(url.rsplit("/", 1)[1])

    out: dict[str, object] = {"smoke": args.smoke, "bare_worker": args.bare_worker, "jobs": args.jobs, "concurrency": args.concurrency, "threads": args.threads, "repeat": repeat, "versions": versions}
    for worker_class, sides in results.items():
        ours_rate = common.median([r["rate"] for r in sides["ours"]])
        bare_rate = common.median([r["rate"] for r in sides["bare"]])
        ratio = ours_rate / bare_rate
        worker_rss = max(r["worker_rss_mb"] for r in sides["ours"])
        pool_rss = max(r["pool_rss_mb"] for r in sides["ours"])
        bare_worker_rss = max(r["worker_rss_mb"] for r in sides["bare"])
        common.figure(f"[{worker_class}] jobs per side / rounds", f"{sides['ours'][0]['jobs']} / {len(sides['ours'])}")
        common.figure(f"[{worker_class}] ours jobs/s (median)", ours_rate)
        common.figure(f"[{worker_class}] bare jobs/s (median, on {'RQ' if args.bare_worker == 'rq' else 'our worker'})", bare_rate)
        common.figure(f"[{worker_class}] ratio ours/bare", ratio, "x (target >= 0.9 against bare RQ)")
        common.figure(f"[{worker_class}] ours per job", 1000 * args.concurrency / ours_rate, "ms of a worker")
        common.figure(f"[{worker_class}] bare per job", 1000 * args.concurrency / bare_rate, "ms of a worker")
        common.figure(f"[{worker_class}] idle worker process RSS after our jobs", worker_rss, "MB (target <= 60)")
        common.figure(f"[{worker_class}] idle worker process RSS after bare jobs", bare_worker_rss, "MB")
        common.figure(f"[{worker_class}] pool RSS ({args.concurrency} workers + parent)", pool_rss, "MB")
        out[worker_class] = {
            "jobs": sides["ours"][0]["jobs"],
            "ours_jobs_per_s": round(ours_rate, 1), "bare_jobs_per_s": round(bare_rate, 1), "ratio": round(ratio, 3),
            "ours_runs": [round(r["rate"], 1) for r in sides["ours"]], "bare_runs": [round(r["rate"], 1) for r in sides["bare"]],
            "worker_rss_mb": round(worker_rss, 1), "bare_worker_rss_mb": round(bare_worker_rss, 1), "pool_rss_mb": round(pool_rss, 1),
            "target_met": ratio >= 0.9 and worker_rss <= 60,
        }
    common.emit("worker_overhead", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
