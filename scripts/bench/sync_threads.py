#!/usr/bin/env python3
"""Benchmark 12: sync mode runs long tasks side by side (SYNC_THREADS), on the embedded default.

USERS schedules due in a SQLite file (the embedded default's database, configured as the project
configures it); one sync-mode pass (`Dispatcher.tick()` of the sync dispatcher, wired by App like
`scripts/run`) with SYNC_THREADS=THREADS runs them all with a task that sleeps SLEEP seconds
(bench_tasks:sleep_task: an I/O-bound monitor). One at a time that pass would take USERS × SLEEP
seconds (100 s for 20 × 5 s); the figure is the pass time and its ratio to that serial time.
Target: all users in one pass in well under the serial time (ratio <= 0.2).

    python scripts/bench/sync_threads.py           # 20 users x 5 s, SYNC_THREADS=20
    python scripts/bench/sync_threads.py --smoke   # 20 users x 0.2 s
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from tests import seeding  # noqa: E402

from core.clock import ProcessClock  # noqa: E402
from core.domain import Mode  # noqa: E402
from monitor_scheduler.wiring import App  # noqa: E402
from schema.migrate import upgrade  # noqa: E402


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[1])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--sleep", type=float, default=5.0, help="seconds each run sleeps")
    parser.add_argument("--threads", type=int, default=20, help="SYNC_THREADS")
    args = parser.parse_args()
    if args.smoke:
        args.sleep = 0.2
    serial = args.users * args.sleep
    os.environ["BENCH_SLEEP"] = str(args.sleep)  # read by bench_tasks.sleep_task at each run
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='bench-sync-threads-')) / 'monitor.db'}"
    settings = common.settings_for(
        url, None, MONITOR_TASK="bench_tasks:sleep_task", SYNC_THREADS=args.threads, SYNC_TIME_BUDGET=serial + 60, JOB_TIMEOUT=int(args.sleep) + 60,
    )
    app = App.from_settings(settings)
    upgrade(app.engine)
    with app.engine.connect() as conn:
        base = ProcessClock().now(conn)
    with app.engine.begin() as conn:
        seeding.add_schedules(conn, [common.user_id(i) for i in range(args.users)], due_at=base - timedelta(seconds=1))

    summary = app.dispatcher(Mode.SYNC).tick()
    with app.engine.connect() as conn:
        recorded = conn.exec_driver_sql("SELECT COUNT(*) FROM UserMonitorRun WHERE status = 'succeeded'").scalar_one()
        held = conn.exec_driver_sql("SELECT COUNT(*) FROM UserMonitorSchedule WHERE lockedBy IS NOT NULL").scalar_one()
    app.close()
    assert summary.succeeded == args.users and recorded == args.users, (summary, recorded)
    assert held == 0, f"{held} leases held after the pass"

    seconds = summary.duration_ms / 1000
    ratio = seconds / serial
    common.figure("users x sleep", f"{args.users} x {args.sleep:g} s, SYNC_THREADS={args.threads}")
    common.figure("one pass", seconds, "s")
    common.figure("one at a time would take", serial, "s")
    common.figure("ratio to serial", ratio, "(target <= 0.2)")
    common.emit(
        "sync_threads",
        {
            "smoke": args.smoke, "users": args.users, "sleep_s": args.sleep, "threads": args.threads, "pass_s": round(seconds, 3),
            "serial_s": serial, "ratio": round(ratio, 4), "succeeded": recorded, "target_met": ratio <= 0.2,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
