"""`monitor-scheduler demo`, and the demo users that it and `web --embedded` seed (one rule for
both: create those that do not exist yet, so a restart keeps what the demo changed)."""

from __future__ import annotations

import argparse

from core.domain import Mode
from dispatcher.loop import DispatchLoop, parse_duration
from monitor_scheduler import console
from monitor_scheduler.wiring import App
from schema.migrate import upgrade

DEMO_USERS: tuple[tuple[str, int], ...] = (("demo-alice", 1), ("demo-bob", 2), ("demo-carol", 5))


def cmd_demo(app: App, args: argparse.Namespace) -> int:
    """Migrate, seed demo users and dispatch them in sync mode: the embedded default end to end."""
    upgrade(app.engine)
    users = app.services.schedules.seed_demo_users(DEMO_USERS)
    print(f"seeded demo users {', '.join(users)} in {app.settings.DATABASE_URL}")

    def one_pass() -> None:
        summary = app.services.runs.dispatch_pass(Mode.SYNC)
        if summary.claimed or not args.loop:
            print(summary.line())
            console.print_schedules(app.services.schedules.list_page(which=None, search=None, limit=100, offset=0).rows)
            print(flush=True)

    if not args.loop:
        one_pass()
        return 0
    print(f"dispatching every {args.every} in sync mode; each pass that runs someone is shown. Ctrl-C stops.", flush=True)
    loop = DispatchLoop(one_pass, parse_duration(args.every))
    console.stop_on_signals(loop)
    loop.run()
    return 0
