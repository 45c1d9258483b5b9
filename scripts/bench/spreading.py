#!/usr/bin/env python3
"""Spread start times: how evenly schedules created together fall due, with and without spreading.

USERS interval schedules (5 minutes) are created in one transaction through the service
(`Schedules.create_many`, the bulk-import path, wired by App like the CLI), once with
SPREAD_START_TIMES=false (all due at the same instant, as before) and once with it on (each at its
stable phase within the interval, from the user id). The due rows are then counted per second over
one interval from the creation instant: `max/mean` is the busiest second over the average one
(1.0 is perfectly even). Target <= 1.2 with spreading, for 100,000 users.

    python scripts/bench/spreading.py            # 100,000 users
    python scripts/bench/spreading.py --smoke    # 3,000 users (no target)
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

from core.clock import epoch_ms  # noqa: E402
from monitor_scheduler.wiring import App  # noqa: E402
from schema.migrate import upgrade  # noqa: E402
from schema.models import schedules  # noqa: E402
from sqlalchemy import select  # noqa: E402

INTERVAL_MINUTES = 5
TARGET = 1.2


def max_over_mean(app: App, interval_s: int) -> tuple[float, int]:
    """(busiest second / mean second, rows counted) over one interval from the earliest creation."""
    with app.engine.connect() as conn:
        rows = conn.execute(select(schedules.c.createdAt, schedules.c.nextRunAt)).all()
    start_ms = min(epoch_ms(created) for created, _ in rows)
    per_second = Counter((epoch_ms(due) - start_ms) // 1000 for _, due in rows)
    inside = [per_second.get(second, 0) for second in range(interval_s)]
    return max(inside) / (sum(inside) / interval_s), sum(inside)


def run(users: int, spread: bool) -> dict[str, float]:
    path = Path(tempfile.mkdtemp(prefix="bench-spreading-")) / "monitor.db"
    app = App.from_settings(common.settings_for(f"sqlite:///{path}", None, SPREAD_START_TIMES=spread))
    try:
        upgrade(app.engine)
        t0 = time.perf_counter()
        created = app.services.schedules.create_many([common.user_id(i) for i in range(users)], interval=INTERVAL_MINUTES)
        seconds = time.perf_counter() - t0
        assert created == users, created
        ratio, counted = max_over_mean(app, INTERVAL_MINUTES * 60)
        assert counted == users, f"{counted} of {users} due within one interval"
    finally:
        app.close()
    common.log(f"spread={spread}: {users} users created in {seconds:.2f}s, max/mean {ratio:.3f}")
    return {"max_over_mean": round(ratio, 3), "create_s": round(seconds, 2)}


def main() -> int:
    parser = common.base_parser(__doc__.splitlines()[1])
    parser.add_argument("--users", type=int, default=100_000)
    args = parser.parse_args()
    if args.smoke:
        args.users = 3_000
    without = run(args.users, spread=False)
    with_spread = run(args.users, spread=True)
    common.figure("users (one transaction each run)", args.users)
    common.figure("interval", INTERVAL_MINUTES, "min")
    common.figure("without spreading: due rows per second max/mean", without["max_over_mean"])
    common.figure("with spreading: due rows per second max/mean", with_spread["max_over_mean"], f"(target <= {TARGET})")
    print(f"max/mean {with_spread['max_over_mean']} (with spreading), max/mean {without['max_over_mean']} (without)", flush=True)
    common.emit("spreading", {
        "smoke": args.smoke, "users": args.users, "interval_minutes": INTERVAL_MINUTES,
        "with_max_over_mean": with_spread["max_over_mean"], "without_max_over_mean": without["max_over_mean"],
        "with_create_s": with_spread["create_s"], "without_create_s": without["create_s"],
        "target_met": with_spread["max_over_mean"] <= TARGET,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
