#!/usr/bin/env python3
"""Benchmark 6: sync mode on SQLite, no-op runs per second through the full record/reschedule path.

RUNS schedules due in a SQLite file (WAL, as the project configures it); one sync-mode pass
(`Dispatcher.tick()` of the sync dispatcher, wired by App like the CLI) runs them all in-process with
worker.tasks:noop_task: claim, lease check, heartbeat thread, fenced finish, history row.
runs/s = runs / pass time; median of REPEAT passes on the same file reset between passes.
Target >= 500 runs/s.

    python scripts/bench/sqlite_sync.py           # 2,000 runs x 3
    python scripts/bench/sqlite_sync.py --smoke
"""

from __future__ import annotations

import sys
import tempfile
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from tests import seeding  # noqa: E402
from sqlalchemy import delete, update  # noqa: E402

from dispatcher.service import Mode  # noqa: E402
from monitor_scheduler.wiring import App  # noqa: E402
from core.clock import ProcessClock  # noqa: E402
from schema.migrate import upgrade  # noqa: E402
from schema.models import runs, schedules  # noqa: E402


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=2_000)
    parser.add_argument("--path", default=None, help="SQLite file (default: a new one in a temp dir)")
    args = parser.parse_args()
    if args.smoke:
        args.runs = 100
    repeat = args.repeat or (1 if args.smoke else 3)
    path = Path(args.path) if args.path else Path(tempfile.mkdtemp(prefix="bench-sqlite-")) / "monitor.db"
    url = f"sqlite:///{path}"

    settings = common.settings_for(url, None, SYNC_TIME_BUDGET=3600.0)
    app = App.from_settings(settings)
    upgrade(app.engine)
    with app.engine.connect() as conn:
        base = ProcessClock().now(conn)
    with app.engine.begin() as conn:  # due over the last `runs` ms, 1 ms apart
        seeding.add_schedules(conn, [common.user_id(i) for i in range(args.runs)], due_at=base - timedelta(milliseconds=args.runs), spread_ms=1)

    rates, times = [], []
    for round_ in range(repeat):
        with app.engine.begin() as conn:
            conn.execute(delete(runs))
            conn.execute(
                update(schedules).values(
                    lockedBy=None, lockedUntil=None, runSlot=None, attempt=0, lastRunAt=None, lastStatus=None,
                    nextRunAt=base - timedelta(seconds=1),
                )
            )
        summary = app.dispatcher(Mode.SYNC).tick()
        assert summary.ran == args.runs and summary.succeeded == args.runs, summary
        with app.engine.connect() as conn:
            recorded = conn.exec_driver_sql("SELECT COUNT(*) FROM UserMonitorRun WHERE status = 'succeeded'").scalar_one()
        assert recorded == args.runs, recorded
        seconds = summary.duration_ms / 1000
        times.append(seconds)
        rates.append(args.runs / seconds)
        common.log(f"pass {round_ + 1}: {args.runs} runs in {seconds:.2f}s = {args.runs / seconds:.0f} runs/s")
    with app.engine.connect() as conn:
        journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
        synchronous = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
    app.close()

    rate = common.median(rates)
    common.figure("runs per pass", args.runs)
    common.figure("journal_mode / synchronous", f"{journal} / {synchronous}")
    common.figure("pass times", ", ".join(f"{t:.2f}s" for t in times))
    common.figure("sync runs/s (median)", rate, "(target >= 500)")
    common.figure("per run", 1000 / rate, "ms")
    common.emit(
        "sqlite_sync",
        {
            "smoke": args.smoke, "runs": args.runs, "repeat": repeat, "runs_per_s": round(rate, 1),
            "pass_s": [round(t, 3) for t in times], "journal_mode": journal, "synchronous": int(synchronous),
            "target_met": rate >= 500,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
