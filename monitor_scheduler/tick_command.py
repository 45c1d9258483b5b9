"""`tick install|uninstall|status`: rq-scheduler and croniter, loaded only when this command runs."""

from __future__ import annotations

import argparse

from dispatcher import tick
from monitor_scheduler.console import fmt
from monitor_scheduler.wiring import App

EXIT_OK = 0


def cmd_tick(app: App, args: argparse.Namespace) -> int:
    if args.action == "install":
        status = tick.install(app.redis, app.settings.QUEUE_NAME, cron=args.cron)
        print(f"installed rq-scheduler tick '{status.cron}' (job {tick.TICK_JOB_ID}), next run {fmt(status.next_run)}; run `rqscheduler --url $REDIS_URL` and a worker")
    elif args.action == "uninstall":
        removed = tick.uninstall(app.redis, app.settings.QUEUE_NAME)
        print("uninstalled rq-scheduler tick" if removed else "rq-scheduler tick was not installed")
    else:
        status = tick.status(app.redis, app.settings.QUEUE_NAME)
        print(f"installed cron='{status.cron}' next run {fmt(status.next_run)}" if status.installed else "not installed")
    return EXIT_OK
