#!/usr/bin/env python3
"""Chaos soak: real dispatchers and workers through worker, dispatcher, Redis and database faults.

Starts its own throwaway MariaDB (or PostgreSQL: --database postgresql) and Redis (append-only file
on; never TEST_MYSQL_URL / TEST_POSTGRES_URL / TEST_REDIS_URL: it must restart them), USERS schedules at a 1-minute interval spread over the
minute, DISPATCHERS `monitor-scheduler dispatch --loop --every EVERY` and WORKERS
`monitor-scheduler worker --concurrency 1` as real processes (a supervisor restarts the ones the
soak kills, as PM2 or systemd would), the task tests.tasks:chaos_task, which logs its own
executions. For DURATION seconds a fault every FAULT_MIN..FAULT_MAX seconds: SIGKILL of a worker
or a dispatcher, SIGSTOP of a worker past its lease (then SIGCONT), Redis SIGKILL and restart,
the database's clean shutdown (MariaDB SIGTERM, PostgreSQL SIGINT) or SIGKILL and restart. Then RECOVER seconds without faults, and the check of the
history against the executions:

    faults injected; overlapping executions of one user (and how many involve a frozen worker);
    slots run twice; finished runs with no recorded result; history rows with no execution; jobs
    in RQ's failed registry and why; processes that exited by themselves; the largest gap between
    two runs of one user.

    python scripts/bench/chaos.py                 # 300 users, 3 dispatchers, 4 workers, 8 minutes
    python scripts/bench/chaos.py --duration 180  # shorter
    python scripts/bench/chaos.py --smoke         # under a minute (CI: test_bench_smoke.py)
    python scripts/bench/chaos.py --database postgresql   # the same against PostgreSQL
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from tests import restart  # noqa: E402
from tests import servers as test_servers  # noqa: E402

PROCESS_FAULTS = ["worker_kill", "dispatcher_kill", "worker_freeze", "redis_kill"]
DATABASE_SERVER = {"mysql": "mariadb", "postgresql": "postgresql"}  # the fault names: mariadb_term, postgresql_kill...


@dataclass
class Proc:
    """One supervised process: restarted after the soak kills it, counted when it exits by itself."""

    role: str
    index: int
    argv: list[str]
    env: dict[str, str]
    log_dir: Path
    popen: subprocess.Popen | None = None
    incarnation: int = 0
    killed_by_us: bool = False
    exited: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.incarnation += 1
        log = open(self.log_dir / f"{self.role}{self.index}-{self.incarnation}.log", "wb")
        self.popen = subprocess.Popen(self.argv, env=self.env, cwd=str(common.REPO_ROOT), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.pids.append(self.popen.pid)
        self.killed_by_us = False

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        if sig == signal.SIGKILL:
            self.killed_by_us = True
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def supervise(self) -> None:
        """Restart it if it is gone: after our kill, or (noted) after exiting by itself."""
        assert self.popen is not None
        code = self.popen.poll()
        if code is None:
            return
        if not self.killed_by_us:
            self.exited.append(f"{self.role}{self.index} pid {self.popen.pid} exit {code}")
            common.log(f"!! {self.role}{self.index} pid {self.popen.pid} exited by itself with {code}")
        self.start()

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.killed_by_us = True
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait()


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[1])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--dispatchers", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--duration", type=float, default=480.0, help="seconds of faults")
    parser.add_argument("--recover", type=float, default=90.0, help="seconds without faults afterwards")
    parser.add_argument("--fault-min", type=float, default=20.0)
    parser.add_argument("--fault-max", type=float, default=40.0)
    parser.add_argument("--every", default="5s", help="dispatcher loop period")
    parser.add_argument("--lease-ms", type=int, default=20_000)
    parser.add_argument("--task-seconds", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the servers' data and the process logs (printed path)")
    common.add_database_option(parser)
    args = parser.parse_args()
    server_name = DATABASE_SERVER[args.database]
    faults_deck = [*PROCESS_FAULTS, f"{server_name}_term", f"{server_name}_kill"]
    if args.smoke:
        args.users, args.dispatchers, args.workers = 20, 2, 2
        args.duration, args.recover, args.fault_min, args.fault_max = 24.0, 12.0, 3.0, 5.0
        args.every, args.lease_ms = "1s", 6_000
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)

    base = Path(tempfile.mkdtemp(prefix="chaos-"))
    test_dir = base / "run"
    test_dir.mkdir()
    common.log(f"chaos soak in {base} (seed {seed})")
    db_server: test_servers.MariaDBServer | test_servers.PostgresServer
    if args.database == "postgresql":
        db_server = test_servers.start_postgres(base / "postgres")
    else:
        db_server = test_servers.start_mariadb(base / "mariadb")
    redis = restart.start_redis_with_aof(base / "redis")
    procs: list[Proc] = []
    faults: Counter[str] = Counter()
    frozen_pids: set[int] = set()
    timers: list[threading.Timer] = []
    try:
        bench_db: common.BenchDatabase = (
            common.PostgresBench(db_server) if isinstance(db_server, test_servers.PostgresServer) else common.MariaDBBench(db_server)
        )
        url = bench_db.new_database("chaos")
        database = url.rsplit("/", 1)[1]
        engine = common.sqlalchemy_engine(url)
        first_slot = common.db_now(engine)
        engine.dispose()
        # First slots spread over the minute (smoke: over 15 s, so that every user runs in it).
        spread_us = 15_000_000 if args.smoke else 60_000_000
        if isinstance(db_server, test_servers.PostgresServer):
            db_server.execute(
                'INSERT INTO "UserMonitorSchedule" ("userId", enabled, "intervalMinutes", "nextRunAt", attempt, "createdAt", "updatedAt") '
                f"SELECT 'user-' || lpad(seq::text, 7, '0'), true, 1, %(base)s + ((seq - 1) * {spread_us} / {args.users}) * interval '1 microsecond', "
                f"0, %(base)s, %(base)s FROM generate_series(1::bigint, {args.users}::bigint) AS seq",
                {"base": first_slot}, database=database,
            )
        else:
            conn = db_server.connect(database=database, autocommit=True)
            with conn.cursor() as cur:
                cur.execute("SET time_zone = '+00:00'")
                cur.execute("SET @base = %s", (first_slot,))
                cur.execute(
                    "INSERT INTO UserMonitorSchedule (userId, enabled, intervalMinutes, nextRunAt, attempt, createdAt, updatedAt) "
                    f"SELECT CONCAT('user-', LPAD(seq, 7, '0')), 1, 1, @base + INTERVAL ((seq - 1) * {spread_us} DIV {args.users}) MICROSECOND, 0, @base, @base "
                    f"FROM seq_1_to_{args.users}"
                )
            conn.close()

        env = common.child_env(
            DATABASE_URL=url, REDIS_URL=redis.url, QUEUE_NAME=common.QUEUE, MONITOR_TASK="tests.tasks:chaos_task",
            MONITOR_TEST_DIR=str(test_dir), MONITOR_TEST_SLEEP=str(args.task_seconds), LOG_LEVEL="INFO",
            DISPATCH_LOCK_TTL=str(args.lease_ms), JOB_TIMEOUT="300",
        )
        cli = [common.PYTHON, "-m", "monitor_scheduler.cli"]
        procs = [Proc("dispatcher", i, [*cli, "dispatch", "--loop", "--every", args.every, "--mode", "queue"], env, base) for i in range(args.dispatchers)]
        procs += [Proc("worker", i, [*cli, "worker", "--concurrency", "1"], env, base) for i in range(args.workers)]
        for proc in procs:
            proc.start()
        workers = [p for p in procs if p.role == "worker"]
        dispatchers = [p for p in procs if p.role == "dispatcher"]

        def supervise_for(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                for proc in procs:
                    proc.supervise()
                time.sleep(0.2)

        def thaw(proc: Proc, pid: int) -> None:
            try:
                os.killpg(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

        common.log(f"{args.users} users, {args.dispatchers} dispatchers every {args.every}, {args.workers} workers; "
                   f"faults for {args.duration:.0f}s every {args.fault_min:.0f}-{args.fault_max:.0f}s, then {args.recover:.0f}s to recover")
        faults_until = time.monotonic() + args.duration
        supervise_for(min(args.fault_min, 3.0))
        deck: list[str] = []
        while time.monotonic() < faults_until:
            # Dealt from a shuffled deck of every kind: a soak of six faults or more injects each.
            if not deck:
                deck = rng.sample(faults_deck, len(faults_deck))
            kind = deck.pop()
            faults[kind] += 1
            common.log(f"fault: {kind}")
            if kind == "worker_kill":
                rng.choice(workers).signal(signal.SIGKILL)
            elif kind == "dispatcher_kill":
                rng.choice(dispatchers).signal(signal.SIGKILL)
            elif kind == "worker_freeze":
                victim = rng.choice(workers)
                assert victim.popen is not None
                frozen_pids.add(victim.popen.pid)
                victim.signal(signal.SIGSTOP)
                timer = threading.Timer(args.lease_ms / 1000 + 5, thaw, (victim, victim.popen.pid))
                timer.start()
                timers.append(timer)
            elif kind == "redis_kill":
                restart.restart(redis, signal.SIGKILL, down_for=rng.uniform(0.5, 2.0))
            elif kind == f"{server_name}_term":  # a clean shutdown (tests/restart.py: SIGINT for PostgreSQL)
                restart.restart(db_server, signal.SIGTERM, down_for=rng.uniform(0.0, 2.0))
            elif kind == f"{server_name}_kill":
                restart.restart(db_server, signal.SIGKILL, down_for=rng.uniform(0.0, 2.0))
            supervise_for(max(0.0, min(rng.uniform(args.fault_min, args.fault_max), faults_until - time.monotonic())))
        for timer in timers:
            timer.join()
        common.log("faults over: recovering")
        supervise_for(args.recover)

        from redis import Redis
        from rq import Queue
        from rq.registry import FailedJobRegistry

        redis_conn = Redis.from_url(redis.url)
        queue = Queue(common.QUEUE, connection=redis_conn)
        failed_reasons: Counter[str] = Counter()
        for job in FailedJobRegistry(queue=queue).get_job_ids():
            exc_info = ""
            fetched = queue.fetch_job(job)
            if fetched is not None:
                result = fetched.latest_result()
                exc_info = (result.exc_string if result is not None else "") or ""
            lines = [line for line in exc_info.strip().splitlines() if line.strip()]
            failed_reasons[lines[-1][:160] if lines else "unknown"] += 1
        redis_conn.close()
        for proc in procs:
            proc.stop()
        exited = [line for proc in procs for line in proc.exited]
        if isinstance(db_server, test_servers.PostgresServer):
            history = db_server.execute(
                'SELECT "userId", to_char(slot, \'YYYY-MM-DD"T"HH24:MI:SS.US\'), attempt, status FROM "UserMonitorRun"', database=database,
            )
        else:
            history = db_server.execute(
                "SELECT userId, DATE_FORMAT(slot, '%Y-%m-%dT%H:%i:%s.%f'), attempt, status FROM UserMonitorRun", database=database,
            )
    finally:
        for timer in timers:
            timer.cancel()
        for proc in procs:
            try:
                proc.stop()
            except Exception as exc:  # stop the others regardless
                common.log(f"could not stop {proc.role}{proc.index}: {exc}")
        redis.stop()
        db_server.stop()

    # --- the check ---------------------------------------------------------------------------------
    def norm_slot(text: str) -> str:  # the task's isoformat and the database's microseconds agree once trimmed
        return text.rstrip("0").rstrip(".") if "." in text else text

    starts: dict[tuple[str, str, int, int], float] = {}
    ends: dict[tuple[str, str, int, int], float] = {}
    log_path = test_dir / "executions.log"
    log_lines = log_path.read_text().splitlines() if log_path.exists() else []
    if args.keep:
        common.log(f"kept {base}: process logs {base}/*.log, executions {log_path}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    for line in log_lines:
        parts = line.split()
        if len(parts) != 6:
            continue
        kind, user, slot, attempt, pid_text, at = parts
        key = (user, norm_slot(slot), int(attempt), int(pid_text))
        (starts if kind == "S" else ends)[key] = float(at)

    killed_pids = {pid for proc in procs for pid in proc.pids}  # every incarnation but the last was killed
    last_pids = {proc.pids[-1] for proc in procs if proc.pids}
    killed_pids -= last_pids
    recorded = defaultdict(list)
    for user, slot, attempt, status in history:
        recorded[(user, norm_slot(slot), int(attempt))].append(status)

    # overlapping executions of one user
    by_user: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for key, began in starts.items():
        user, _, _, pid = key
        ended = ends.get(key, began + args.task_seconds)  # killed mid-run: about when it would have ended
        by_user[user].append((began, ended, pid))
    overlaps = overlaps_frozen = 0
    largest_gap = 0.0
    for runs in by_user.values():
        runs.sort()
        for (b1, e1, p1), (b2, e2, p2) in zip(runs, runs[1:]):
            if b2 < e1:
                overlaps += 1
                overlaps_frozen += p1 in frozen_pids or p2 in frozen_pids
        for (b1, _, _), (b2, _, _) in zip(runs, runs[1:]):
            largest_gap = max(largest_gap, b2 - b1)

    slot_runs = Counter((user, slot) for user, slot, _, _ in starts)
    twice = sum(1 for count in slot_runs.values() if count > 1)
    finished_statuses = {"succeeded", "failed", "stale"}
    unrecorded = [key for key in ends if not finished_statuses & set(recorded.get(key[:3], []))]
    unrecorded_killed = sum(1 for key in unrecorded if key[3] in killed_pids)
    executed = {key[:3] for key in starts}
    phantom = sum(1 for key, statuses in recorded.items() for status in statuses if status in finished_statuses and key not in executed)
    statuses = Counter(status for _, _, _, status in history)
    users_run = len(by_user)

    common.figure("database", args.database)
    common.figure("settings", f"{args.users} users / 1 min, {args.dispatchers} dispatchers every {args.every}, {args.workers} workers x 1, "
                  f"lease {args.lease_ms} ms, faults {args.duration:.0f}s every {args.fault_min:g}-{args.fault_max:g}s, recover {args.recover:.0f}s, seed {seed}")
    common.figure("faults injected", sum(faults.values()), " ".join(f"({k} {v})" for k, v in sorted(faults.items())))
    common.figure("executions", len(starts), f"(finished {len(ends)}; users run {users_run}/{args.users})")
    common.figure("history rows", len(history), " ".join(f"({k} {v})" for k, v in sorted(statuses.items())))
    common.figure("overlapping executions", overlaps, f"(from frozen workers {overlaps_frozen})")
    common.figure("slots run twice", twice)
    common.figure("finished runs with no recorded result", len(unrecorded), f"(worker SIGKILLed before writing: {unrecorded_killed})")
    common.figure("history rows with no execution", phantom)
    common.figure("jobs in RQ's failed registry", sum(failed_reasons.values()), "; ".join(f"{n} x {why}" for why, n in failed_reasons.most_common()))
    common.figure("processes that exited by themselves", len(exited), "; ".join(exited))
    common.figure("largest gap between two runs of one user", largest_gap, "s")
    common.emit(
        "chaos",
        {
            "smoke": args.smoke, "database": args.database, "seed": seed, "users": args.users, "dispatchers": args.dispatchers, "workers": args.workers,
            "duration_s": args.duration, "lease_ms": args.lease_ms, "faults": sum(faults.values()), "faults_by_kind": dict(faults),
            "executions": len(starts), "history_rows": len(history), "statuses": dict(statuses),
            "overlaps": overlaps, "overlaps_frozen": overlaps_frozen, "slots_run_twice": twice,
            "unrecorded_finished": len(unrecorded), "unrecorded_finished_killed": unrecorded_killed,
            "history_without_execution": phantom, "failed_jobs": sum(failed_reasons.values()),
            "failed_reasons": dict(failed_reasons), "exited_by_themselves": len(exited), "exits": exited,
            "largest_gap_s": round(largest_gap, 1), "users_run": users_run,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
