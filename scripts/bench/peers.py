#!/usr/bin/env python3
"""Benchmark 3: the same per-user schedules in rq-scheduler and APScheduler 3 vs our pass.

For N users (default 100,000), every one due now, on an N-row table:
  ours:          one queue-mode dispatch pass (median of REPEAT), N RQ jobs in the queue;
  rq-scheduler:  N interval jobs registered (not timed), then one `Scheduler.enqueue_jobs()` pass
                 (timed) until all N are in the RQ queue;
  APScheduler 3: N interval jobs in a SQLAlchemyJobStore on the same MariaDB (rows bulk-inserted,
                 not timed), then BackgroundScheduler.start() until every job was submitted to its
                 executor once (EVENT_JOB_SUBMITTED count; coalesce=True, misfire_grace_time=None so
                 late jobs are submitted rather than skipped).
Ratios are peer time / our time at the same N. A peer that cannot do N in a few minutes is run at
--apscheduler-users / --rq-scheduler-users instead and the output says so (our pass is then
timed at that N too).

    python scripts/bench/peers.py                               # 100k users for all three
    python scripts/bench/peers.py --apscheduler-users 10000     # a peer at a smaller N
    python scripts/bench/peers.py --smoke
"""

from __future__ import annotations

import pickle
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import passes  # noqa: E402
from redis import Redis  # noqa: E402

JOB_FUNC = "worker.tasks.noop_task"


def time_ours(srv: common.Servers, users: int, chunk: int, repeat: int) -> list[float]:
    url = common.new_database(srv.mariadb, f"bench_peers_ours{users}")
    engine = common.sqlalchemy_engine(url)
    base = common.db_now(engine)
    common.seed_schedules(srv.mariadb, url, total=users, due=users, base=base)
    settings = common.settings_for(url, srv.redis_url, DISPATCH_CHUNK_SIZE=chunk)
    redis_conn = Redis.from_url(srv.redis_url)
    times = []
    try:
        for _ in range(repeat):
            common.flush_redis(srv.redis_url)
            common.reset_claimed(srv.mariadb, url, total=users, due=users, base=base)
            common.warm(srv.mariadb, url)
            result = passes.ours(engine, settings, redis_conn, base)
            assert result.rows == users and passes.queue_length(redis_conn, common.QUEUE) == users
            times.append(result.seconds)
            common.log(f"ours, {users} users: {result.seconds:.2f}s")
    finally:
        redis_conn.close()
        engine.dispose()
        srv.mariadb.drop_database(url.rsplit("/", 1)[1])
    return times


def time_rq_scheduler(redis_url: str, users: int) -> tuple[float, float]:
    from rq_scheduler import Scheduler

    common.flush_redis(redis_url)
    conn = Redis.from_url(redis_url)
    scheduler = Scheduler(queue_name=common.QUEUE, connection=conn, interval=1)
    now = datetime.now(UTC).replace(tzinfo=None)
    t0 = time.perf_counter()
    # what Scheduler.schedule() does per job, pipelined (registration is not what is compared)
    for start in range(0, users, 2000):
        with conn.pipeline() as pipe:
            for i in range(start, min(users, start + 2000)):
                uid = common.user_id(i + 1)
                job = scheduler._create_job(JOB_FUNC, args=(uid, None), commit=False, result_ttl=-1, id=f"sched-{uid}", timeout=600)
                job.meta["interval"] = 300
                job.save(pipeline=pipe)
                due = now - timedelta(milliseconds=common.DUE_SPREAD_MS - (i * common.DUE_SPREAD_MS) // users)
                pipe.zadd(scheduler.scheduled_jobs_key, {job.id: int(due.replace(tzinfo=UTC).timestamp())})
            pipe.execute()
    register_s = time.perf_counter() - t0
    common.log(f"rq-scheduler: registered {users} interval jobs in {register_s:.1f}s")
    t0 = time.perf_counter()
    scheduler.enqueue_jobs()
    seconds = time.perf_counter() - t0
    queued = passes.queue_length(conn, common.QUEUE)
    conn.close()
    assert queued == users, queued
    common.log(f"rq-scheduler, {users} users: enqueue_jobs() {seconds:.2f}s")
    return seconds, register_s


def time_apscheduler(srv: common.Servers, users: int) -> tuple[float, float]:
    from apscheduler.events import EVENT_JOB_SUBMITTED
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.job import Job
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger
    from apscheduler.util import datetime_to_utc_timestamp

    name = f"bench_aps_{users}_{int(time.time()) % 100000}"
    url = srv.mariadb.create_database(name) + "?charset=utf8mb4"
    store = SQLAlchemyJobStore(url=url)
    scheduler = BackgroundScheduler(
        jobstores={"default": store},
        executors={"default": ThreadPoolExecutor(10)},
        job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
        timezone=UTC,
    )
    store.jobs_t.create(store.engine, checkfirst=True)
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    # what add_job() stores per job, bulk-inserted (registration is not what is compared)
    for start in range(0, users, 5000):
        rows = []
        for i in range(start, min(users, start + 5000)):
            uid = common.user_id(i + 1)
            due = now - timedelta(milliseconds=common.DUE_SPREAD_MS - (i * common.DUE_SPREAD_MS) // users)
            job = Job(
                scheduler, id=uid, func="worker.tasks:noop_task", args=(uid, None), kwargs={},
                trigger=IntervalTrigger(minutes=5, start_date=due, timezone=UTC), executor="default", name=uid,
                misfire_grace_time=None, coalesce=True, max_instances=1, next_run_time=due,
            )
            rows.append({"id": uid, "next_run_time": datetime_to_utc_timestamp(due),
                         "job_state": pickle.dumps(job.__getstate__(), store.pickle_protocol)})
        with store.engine.begin() as conn:
            conn.execute(store.jobs_t.insert(), rows)
    register_s = time.perf_counter() - t0
    common.log(f"APScheduler: stored {users} interval jobs in {register_s:.1f}s")

    submitted = 0
    done = threading.Event()
    lock = threading.Lock()

    def on_submitted(event: object) -> None:
        nonlocal submitted
        with lock:
            submitted += 1
            if submitted >= users:
                done.set()

    scheduler.add_listener(on_submitted, EVENT_JOB_SUBMITTED)
    t0 = time.perf_counter()
    scheduler.start()
    finished = done.wait(timeout=3600)
    seconds = time.perf_counter() - t0
    scheduler.shutdown(wait=False)
    store.engine.dispose()
    srv.mariadb.drop_database(name)
    assert finished, f"only {submitted}/{users} submitted"
    common.log(f"APScheduler, {users} users: all submitted once after {seconds:.2f}s")
    return seconds, register_s


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[1])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--rq-scheduler-users", type=int, default=None, help="default: --users")
    parser.add_argument("--apscheduler-users", type=int, default=None, help="default: --users")
    parser.add_argument("--chunk", type=int, default=1_000)
    args = parser.parse_args()
    if args.smoke:
        args.users, args.rq_scheduler_users, args.apscheduler_users = 500, 500, 200
    rq_users = args.rq_scheduler_users or args.users
    aps_users = args.apscheduler_users or args.users
    repeat = args.repeat or (1 if args.smoke else 3)

    with common.servers() as srv:
        versions = srv.versions()
        from importlib.metadata import version

        versions["apscheduler"] = version("apscheduler")
        versions["rq_scheduler"] = version("rq-scheduler")
        ours_at: dict[int, float] = {}
        for n in sorted({rq_users, aps_users}):
            ours_at[n] = common.median(time_ours(srv, n, args.chunk, repeat))
        rq_s, rq_register = time_rq_scheduler(srv.redis_url, rq_users)
        aps_s, aps_register = time_apscheduler(srv, aps_users)

    rq_ratio = rq_s / ours_at[rq_users]
    aps_ratio = aps_s / ours_at[aps_users]
    for n, seconds in sorted(ours_at.items()):
        common.figure(f"ours, {n} users: one pass (median of {repeat})", seconds, "s")
    common.figure(f"rq-scheduler, {rq_users} users: enqueue_jobs() pass", rq_s, "s")
    common.figure(f"APScheduler 3 (SQLAlchemyJobStore), {aps_users} users: until all submitted once", aps_s, "s")
    if aps_users < args.users:
        common.figure("note", f"APScheduler measured at {aps_users} users, not {args.users}: per-job UPDATE in its own transaction, see docs")
    common.figure("ratio rq-scheduler/ours", rq_ratio, "x (target >= 7)")
    common.figure("ratio APScheduler/ours", aps_ratio, "x (target >= 7)")
    common.emit(
        "peers",
        {
            "smoke": args.smoke, "users": args.users, "rq_scheduler_users": rq_users, "apscheduler_users": aps_users,
            "ours_s": {str(n): round(s, 3) for n, s in ours_at.items()},
            "rq_scheduler_s": round(rq_s, 3), "apscheduler_s": round(aps_s, 3),
            "rq_scheduler_register_s": round(rq_register, 2), "apscheduler_register_s": round(aps_register, 2),
            "rq_scheduler_ratio": round(rq_ratio, 3), "apscheduler_ratio": round(aps_ratio, 3),
            "target_met": rq_ratio >= 7 and aps_ratio >= 7, "versions": versions,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
