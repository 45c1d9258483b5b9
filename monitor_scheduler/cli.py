"""`monitor-scheduler`: the operators' command line (entry layer: parses and formats; every
operation is a call into the service layer, services.facade.Services).

Exit codes: 0 done; 1 the pass or command failed (for example Redis went away); 2 bad input,
bad setting or unknown user (nothing written); 3 the user is running (lease held).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from sqlalchemy.exc import SQLAlchemyError

from core import shutdown
from core.domain import Mode, ScheduleFilter
from core.exceptions import ConfigurationError, DispatchFailed, InvalidInput, MonitorSchedulerError
from core.logs import configure_logging
from core.calendar import ScheduleRule, parse_cron
from core.clock import utc_naive
from core.scheduling import (
    MAX_INTERVAL_MINUTES,
    MAX_PAUSE_AFTER,
    MAX_RETENTION_DAYS,
    MAX_RETRIES,
    MIN_INTERVAL_MINUTES,
    MIN_PAUSE_AFTER,
    MIN_RETENTION_DAYS,
    validate_interval,
)
from core.settings import Settings, load_settings
from dispatcher.loop import DispatchLoop, parse_duration
from monitor_scheduler import console
from monitor_scheduler.wiring import App
from services.schedules import USE_DEFAULT, CalendarChange, PolicyChange
from worker.pool import run_workers

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_INPUT = 0, 1, 2


# --- commands -------------------------------------------------------------------------------------


def cmd_dispatch(app: App, args: argparse.Namespace) -> int:
    if args.via_http:  # before anything local is built: this host may have no REDIS_URL at all
        return _dispatch_via_http(app.settings, args)
    mode = Mode(args.mode) if args.mode else app.settings.default_mode
    if args.loop:
        return _dispatch_loop(app, mode, args)
    try:
        if args.user is not None:
            summary, _ = app.services.runs.run_now(args.user, mode)
        else:
            summary = app.services.runs.dispatch_pass(mode)
    except DispatchFailed as exc:
        console.print_summary(exc.summary, args.json)  # what the pass did before it failed
        raise
    console.print_summary(summary, args.json)
    return EXIT_OK


def _dispatch_via_http(settings: Settings, args: argparse.Namespace) -> int:
    """Ask a running web app to do the pass (cron on a host without database access)."""
    secret = settings.CRON_SECRET
    if secret is None:
        raise ConfigurationError("invalid setting CRON_SECRET: required with --via-http")
    body: dict[str, str] = {}
    if args.user:
        body["userId"] = args.user
    if args.mode:
        body["mode"] = args.mode
    request = urllib.request.Request(
        args.via_http.rstrip("/") + "/api/cron/one-click-start",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-cron-secret": secret.get_secret_value()},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            payload = response.read().decode()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise MonitorSchedulerError(f"{args.via_http} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError) as exc:
        raise MonitorSchedulerError(f"{args.via_http} unreachable: {exc}") from None
    print(payload.strip())
    return EXIT_OK


def _dispatch_loop(app: App, mode: Mode, args: argparse.Namespace) -> int:
    app.dispatcher(mode)  # fail fast on a bad setting (REDIS_URL, MONITOR_TASK) before looping
    loop = DispatchLoop(lambda: console.print_summary(app.services.runs.dispatch_pass(mode), args.json), parse_duration(args.every))
    console.stop_on_signals(loop)
    logger.info("dispatcher loop: mode=%s every=%ss", mode.value, loop.every)
    loop.run()
    return EXIT_OK


def cmd_worker(app: App, args: argparse.Namespace) -> int:
    threads = args.threads if args.threads is not None else app.settings.WORKER_THREADS
    worker_class = args.worker_class or app.settings.WORKER_CLASS
    if not 1 <= threads <= MAX_WORKER_THREADS:
        raise ConfigurationError(f"invalid setting --threads: must be from 1 to {MAX_WORKER_THREADS}")
    if threads > 1 and worker_class == "fork":
        raise ConfigurationError("invalid setting WORKER_THREADS: threads need WORKER_CLASS=simple (fork runs one job per process)")
    app.runner()  # fail fast: MONITOR_TASK must import before any worker starts
    return run_workers(
        app.settings,
        app.redis,
        concurrency=args.concurrency or app.settings.WORKER_CONCURRENCY,
        burst=args.burst,
        worker_class=worker_class,
        threads=threads,
    )


def _policy_value(text: str | None) -> object | None:
    """A failure-policy option as typed: "default" puts the settings default back; the rest is
    checked by the service (a bad value exits 2, nothing written)."""
    if text is not None and text.strip().lower() == USE_DEFAULT.value:
        return USE_DEFAULT
    return text


def cmd_schedule_set(app: App, args: argparse.Namespace) -> int:
    calendar = CalendarChange(cron=args.cron, time_zone=args.tz, spread=args.spread)
    policy = PolicyChange(retries=_policy_value(args.retries), retry_backoff=_policy_value(args.retry_backoff),
                          pause_after=_policy_value(args.pause_after))
    schedules = app.services.schedules
    change = schedules.set(args.user, interval=args.interval, enabled=args.enabled, calendar=calendar, policy=policy)
    verb = "created" if change.created else "updated"
    print(f"{verb} " + json.dumps(console.schedule_dict(change.schedule, schedules.effective_policy(change.schedule))))
    return EXIT_OK


def cmd_schedule_resume(app: App, args: argparse.Namespace) -> int:
    """Resume a paused schedule (exit 0 also when it was not paused: nothing changes then)."""
    schedules = app.services.schedules
    resumed = schedules.resume(args.user)
    verb = "resumed" if resumed.resumed else "not paused, unchanged"
    print(f"{verb} " + json.dumps(console.schedule_dict(resumed.schedule, schedules.effective_policy(resumed.schedule))))
    return EXIT_OK


def cmd_schedule_preview(_app: None, args: argparse.Namespace) -> int:
    """The next slots of an expression or interval, without a database (needs_app=False)."""
    try:
        if args.cron is not None:
            rule = ScheduleRule(0, parse_cron(args.cron, args.tz or "UTC"))
        else:
            if args.tz is not None:
                raise ValueError("--tz goes with --cron (an interval is the same in every zone)")
            rule = ScheduleRule(validate_interval(args.interval))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    zone = args.tz or "UTC"
    start = args.start if args.start is not None else utc_naive(datetime.now(timezone.utc))
    for slot in rule.upcoming(start, args.count):
        print(console.slot_line(slot, zone))
    return EXIT_OK


def cmd_schedule_show(app: App, args: argparse.Namespace) -> int:
    schedule = app.services.schedules.get(args.user)
    data = console.schedule_dict(schedule, app.services.schedules.effective_policy(schedule))
    if args.next:
        zone = str(data["timeZone"])
        data["nextRuns"] = [console.slot_line(slot, zone) for slot in app.services.schedules.upcoming(args.user, args.next)]
    data["recentRuns"] = [console.run_dict(r) for r in app.services.runs.history(args.user, limit=args.runs)]
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return EXIT_OK


def cmd_schedule_list(app: App, args: argparse.Namespace) -> int:
    which = next((f for f in ScheduleFilter if getattr(args, f.value)), None)
    page = app.services.schedules.list_page(which=which, search=args.search, limit=args.limit, offset=args.offset)
    if args.json:
        effective = app.services.schedules.effective_policy
        print(json.dumps([console.schedule_dict(r, effective(r)) for r in page.rows], ensure_ascii=False))
    else:
        console.print_schedules(page.rows)
    return EXIT_OK


def cmd_check(app: App, args: argparse.Namespace) -> int:
    """Exit 0 when healthy, 1 with the reasons otherwise: for PM2, systemd and Kubernetes probes.
    `--json` prints the body of GET /healthz/scheduler instead of the line (same exit code)."""
    report = app.services.status.scheduler_health()
    if args.json:
        print(json.dumps(report.as_json()))
        return EXIT_OK if report.ok else EXIT_FAILED
    age, lag, capacity = report.last_pass_age_seconds, report.scheduling_lag_seconds, report.capacity
    facts = f"last_pass_age={'never' if age is None else f'{age:.0f}s'} scheduling_lag={'unknown' if lag is None else f'{lag:.0f}s'}"
    if capacity is not None:
        wait = capacity.expected_wait_seconds
        facts += (
            f" capacity_needed={capacity.needed:.1f} capacity_available={'unknown' if capacity.capacity is None else capacity.capacity}"
            f" backlog={capacity.backlog} expected_wait={'unknown' if wait is None else f'{wait:.0f}s'}"
        )
    if report.ok:
        print(f"ok {facts}")
        return EXIT_OK
    print(f"unhealthy {facts}: " + "; ".join(report.problems))
    return EXIT_FAILED


def cmd_unlock(app: App, args: argparse.Namespace) -> int:
    released = app.services.runs.unlock_expired()
    print(f"unlocked {len(released)} expired lease(s)" + (": " + ", ".join(released[:20]) if released else ""))
    return EXIT_OK


def cmd_prune(app: App, args: argparse.Namespace) -> int:
    total, cutoff = app.services.runs.prune_history(args.days)
    print(f"pruned {total} run(s) finished before {console.fmt(cutoff)}")
    total, cutoff = app.services.runs.prune_samples()
    print(f"pruned {total} capacity sample(s) taken before {console.fmt(cutoff)}")
    return EXIT_OK


# --- parser ---------------------------------------------------------------------------------------

MAX_LIST_LIMIT = 10_000
MAX_OFFSET = 10_000_000  # as the admin API's
MAX_HISTORY_RUNS = 10_000
MAX_WORKER_PROCESSES = 256  # as WORKER_CONCURRENCY
MAX_WORKER_THREADS = 1000  # as WORKER_THREADS
MAX_PORT = 65535
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,12}")  # ASCII digits only (int() would read "٥" and "1_0")


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse `type=` for a whole number from `low` to `high`: anything else is argparse's
    exit 2, with the option's name and the range in the message, before anything is touched."""

    def parse(text: str) -> int:
        stripped = text.strip()
        value = int(stripped) if _WHOLE_NUMBER.fullmatch(stripped) else None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, got {text!r}")
        return value

    return parse


MAX_LINK_TTL_SECONDS = 7 * 24 * 3600
"""A one-time link valid for a week at most: long enough for any mail, short enough that an old
inbox holds no live links (and an absurd --ttl can never mint a token whose expiry no date holds)."""


def link_ttl(text: str) -> int:
    """An argparse `type=` for login-link --ttl: a duration from 1s to 168h (7 days), in seconds."""
    try:
        seconds = parse_duration(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 1 <= seconds <= MAX_LINK_TTL_SECONDS:
        raise argparse.ArgumentTypeError(f"must be from 1s to 168h (7 days), got {text!r}")
    return int(seconds)


MAX_PREVIEW_SLOTS = 10_000


def instant(text: str) -> datetime:
    """An argparse `type=` for --from: ISO 8601, UTC unless it names an offset."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an ISO 8601 time such as 2026-03-29T00:00Z, got {text!r}") from None
    return utc_naive(moment)


_FILTER_HELP = {
    ScheduleFilter.DUE: "only schedules due now and not leased (default: every schedule)",
    ScheduleFilter.RUNNING: "only schedules whose run holds a live lease (queued or running)",
    ScheduleFilter.FAILING: "only schedules whose last run failed or was lost",
    ScheduleFilter.DISABLED: "only disabled schedules",
    ScheduleFilter.STALE: "only schedules whose lease expired without a result (see unlock)",
    ScheduleFilter.PAUSED: "only schedules paused after consecutive failed slots (see schedule resume)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monitor-scheduler", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=_SCHEMA_COMMANDS + "cmd_migrate")

    p = sub.add_parser("schema-sql", help="print the MySQL or PostgreSQL DDL generated from the migrations")
    p.add_argument("--dialect", choices=["mysql", "postgresql"], default="mysql",
                   help="mysql (MySQL/MariaDB: schema/mysql.sql) or postgresql (schema/postgresql.sql); default mysql")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="write schema/mysql.sql or schema/postgresql.sql (per --dialect)")
    group.add_argument("--check", action="store_true", help="exit 1 if that file is out of date")
    p.set_defaults(func=_SCHEMA_COMMANDS + "cmd_schema_sql", needs_app=False)

    p = sub.add_parser("dispatch", help="one dispatch pass (or run one user now with --user)")
    p.add_argument("--mode", choices=[m.value for m in Mode], help="default: queue when REDIS_URL is set, else sync")
    p.add_argument("--user", metavar="ID", help="direct mode: run this user now (never beside a live run); default: a pass over every due user")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--loop", action="store_true", help="keep dispatching every --every until SIGTERM")
    p.add_argument("--via-http", metavar="URL", help="ask the web app at URL to dispatch (POST /api/cron/one-click-start); default: dispatch in this process")
    p.add_argument("--every", default="60s", help="loop period: 10s, 500ms, 1m (default 60s)")
    p.set_defaults(func=cmd_dispatch)

    p = sub.add_parser("worker", help="start RQ workers on the queue")
    p.add_argument("--concurrency", type=whole_number(1, MAX_WORKER_PROCESSES), metavar="N",
                   help=f"worker processes, 1-{MAX_WORKER_PROCESSES} (default WORKER_CONCURRENCY)")
    p.add_argument("--worker-class", choices=["simple", "fork"], help="default WORKER_CLASS")
    p.add_argument("--threads", type=int, metavar="N",
                   help=f"runs at once in each worker process, 1-{MAX_WORKER_THREADS} (default WORKER_THREADS)")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.set_defaults(func=cmd_worker)

    sched = sub.add_parser("schedule", help="show and change schedules").add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sched.add_parser("set", help="create or change a user's schedule")
    p.add_argument("user", help="the user id (1-64 characters; see the user id rule in README)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--interval", metavar="MINUTES",
                      help=f"run every MINUTES, {MIN_INTERVAL_MINUTES}-{MAX_INTERVAL_MINUTES} (switches a calendar schedule back to an interval); "
                      "default: unchanged, DEFAULT_INTERVAL_MINUTES for a new schedule")
    kind.add_argument("--cron", metavar="EXPR", help='a calendar schedule: 5 fields, e.g. "0 9 * * MON-FRI" (default: unchanged)')
    p.add_argument("--tz", metavar="ZONE", help="IANA time zone of the expression, e.g. Europe/Berlin (default: unchanged, else UTC)")
    p.add_argument("--spread", metavar="DURATION",
                   help="start a calendar schedule up to this late, by a stable per-user offset: 0 to 24h, e.g. 10m (default: unchanged, else 0)")
    toggle = p.add_mutually_exclusive_group()
    toggle.add_argument("--enable", dest="enabled", action="store_const", const=True,
                        help="run the schedule automatically (default: unchanged, enabled for a new schedule)")
    toggle.add_argument("--disable", dest="enabled", action="store_const", const=False,
                        help="stop automatic runs; run now still works (default: unchanged)")
    p.add_argument("--retries", metavar="N",
                   help=f"attempts after the first within one slot when a run fails, 0-{MAX_RETRIES}, or 'default' "
                   "(default: unchanged, DEFAULT_RETRIES for a new schedule)")
    p.add_argument("--retry-backoff", metavar="DURATION",
                   help="base delay before a retry, doubled each attempt: 1s to 24h, e.g. 30s, 5m, 1h or seconds, or 'default' "
                   "(default: unchanged, RETRY_BACKOFF_SECONDS for a new schedule)")
    p.add_argument("--pause-after", metavar="N",
                   help=f"pause after N consecutive failed slots, {MIN_PAUSE_AFTER}-{MAX_PAUSE_AFTER}, 'off' to never pause, or 'default' "
                   "(default: unchanged, PAUSE_AFTER_FAILED_SLOTS for a new schedule)")
    p.set_defaults(func=cmd_schedule_set, enabled=None)
    p = sched.add_parser("resume", help="resume a paused schedule: it runs again at its next slot from now (missed slots are not run)")
    p.add_argument("user", help="the user id whose paused schedule resumes")
    p.set_defaults(func=cmd_schedule_resume)
    p = sched.add_parser("preview", help="the next slots of a cron expression or an interval (no database)")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--cron", metavar="EXPR", help='5 fields, e.g. "0 9 * * MON-FRI" (no default: --cron or --interval)')
    kind.add_argument("--interval", metavar="MINUTES", help="1-1440 (no default: --cron or --interval)")
    p.add_argument("--tz", metavar="ZONE", help="IANA time zone of --cron, e.g. Europe/Berlin (default UTC)")
    p.add_argument("--from", dest="start", type=instant, metavar="ISO-8601",
                   help="slots after this time, 0001-01-01 to 9999-12-31 (default now; UTC unless an offset is given)")
    p.add_argument("--count", type=whole_number(1, MAX_PREVIEW_SLOTS), default=10, metavar="N",
                   help=f"slots shown, 1-{MAX_PREVIEW_SLOTS} (default 10)")
    p.set_defaults(func=cmd_schedule_preview, needs_app=False, start=None)
    p = sched.add_parser("show", help="one user's schedule and recent runs")
    p.add_argument("user", help="the user id whose schedule is shown")
    p.add_argument("--runs", type=whole_number(1, MAX_HISTORY_RUNS), default=10, metavar="N",
                   help=f"recent runs shown, 1-{MAX_HISTORY_RUNS} (default 10)")
    p.add_argument("--next", type=whole_number(1, MAX_PREVIEW_SLOTS), metavar="N",
                   help=f"also its next N slots (nextRuns: UTC and local time), 1-{MAX_PREVIEW_SLOTS} (default: none)")
    p.set_defaults(func=cmd_schedule_show)
    p = sched.add_parser("list", help="list schedules")
    filters = p.add_mutually_exclusive_group()
    for f in ScheduleFilter:
        filters.add_argument(f"--{f.value}", action="store_true", help=_FILTER_HELP[f])
    p.add_argument("--search", metavar="TEXT", help="only user ids containing TEXT; default: every user")
    p.add_argument("--limit", type=whole_number(1, MAX_LIST_LIMIT), default=100, metavar="N",
                   help=f"schedules shown, 1-{MAX_LIST_LIMIT} (default 100)")
    p.add_argument("--offset", type=whole_number(0, MAX_OFFSET), default=0, metavar="N",
                   help=f"schedules skipped first, 0-{MAX_OFFSET} (default 0)")
    p.add_argument("--json", action="store_true", help="print the schedules as a JSON array; default: a table")
    p.set_defaults(func=cmd_schedule_list)

    p = sub.add_parser("tick", help="register the dispatch pass with rq-scheduler (no crontab needed)")
    p.add_argument("action", choices=["install", "uninstall", "status"], help="register the job, remove it, or show it")
    p.add_argument("--cron", default="* * * * *", help="croniter expression (default: every minute)")
    p.set_defaults(func=_TICK_COMMANDS + "cmd_tick")

    p = sub.add_parser("check", help="exit 0 if dispatch passes succeed and due users do not wait too long")
    p.add_argument("--json", action="store_true", help="print the body of GET /healthz/scheduler (with the capacity figures) instead of one line; default: one line")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("unlock", help="release expired leases (recording the lost runs)")
    p.add_argument("--expired", action="store_true", required=True, help="only expired leases (the only kind)")
    p.set_defaults(func=cmd_unlock)

    p = sub.add_parser("prune", help="delete run history older than HISTORY_RETENTION_DAYS and capacity samples older than CAPACITY_SAMPLE_RETENTION")
    p.add_argument("--days", type=whole_number(MIN_RETENTION_DAYS, MAX_RETENTION_DAYS), metavar="N",
                   help=f"keep N days of history, {MIN_RETENTION_DAYS}-{MAX_RETENTION_DAYS} (default HISTORY_RETENTION_DAYS)")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("demo", help="seed demo users and dispatch them in sync mode (the embedded default)")
    p.add_argument("--loop", action="store_true", help="keep dispatching until Ctrl-C")
    p.add_argument("--every", default="10s", help="loop period (default 10s)")
    p.set_defaults(func=_DEMO_COMMANDS + "cmd_demo")
    p = sub.add_parser("web", help="serve the web app: settings page, admin overview, JSON API, cron endpoint")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=whole_number(1, MAX_PORT), default=10111, help=f"port, 1-{MAX_PORT} (default 10111)")
    p.add_argument("--dev", action="store_true", help="development: without SECRET_KEY use a random per-process key")
    p.add_argument(
        "--embedded", action="store_true",
        help="demo on this machine: migrate, seed demo users, dispatch in sync mode every 10 s in-process, "
        "print sign-in links (implies --dev)",
    )
    p.set_defaults(func=_WEB_COMMANDS + "cmd_web")

    p = sub.add_parser("login-link", help="print a one-time sign-in URL for a user")
    p.add_argument("user", help="the user id the link signs in as")
    p.add_argument("--admin", action="store_true", help="the link grants admin rights")
    p.add_argument("--ttl", type=link_ttl, default="15m",
                   help="how long the link stays valid: 30s, 15m, 2h; from 1s to 168h (7 days), default 15m")
    p.set_defaults(func=_WEB_COMMANDS + "cmd_login_link")

    p = sub.add_parser("sign-out", help="end a user's web sessions on every browser and web process and refuse their tokens issued before (logout everywhere)")
    p.add_argument("user", help="the user id whose sessions end")
    p.add_argument("--admin-only", action="store_true",
                   help="end only the sessions, tokens and links with admin rights (after taking the admin grant back); default: all of them")
    p.set_defaults(func=_WEB_COMMANDS + "cmd_sign_out")
    return parser


# Commands with heavy dependencies live in modules of their own, loaded only when one of them runs:
# a cron pass (`dispatch`, every minute) then never imports FastAPI, uvicorn, JWT, Prometheus
# (web), Alembic (schema, demo) or rq-scheduler (tick).
_WEB_COMMANDS = "monitor_scheduler.web_command:"
_SCHEMA_COMMANDS = "monitor_scheduler.schema_command:"
_TICK_COMMANDS = "monitor_scheduler.tick_command:"
_DEMO_COMMANDS = "monitor_scheduler.demo:"

Command = Callable[..., int]  # (App, args), or (None, args) for commands with needs_app=False


def _command(func: Command | str) -> Command:
    if isinstance(func, str):
        module, _, name = func.partition(":")
        command: Command = getattr(importlib.import_module(module), name)
        return command
    return func


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    shutdown.note_default_interrupt()  # a task's own KeyboardInterrupt is not Ctrl-C (core.shutdown)
    try:
        if not getattr(args, "needs_app", True):
            return _command(args.func)(None, args)
        settings = load_settings()
        configure_logging(settings)
        app = App.from_settings(settings)
        try:
            return _command(args.func)(app, args)
        finally:
            app.close()
    except MonitorSchedulerError as exc:
        print(f"monitor-scheduler: {exc}", file=sys.stderr)
        return exc.exit_code
    except SQLAlchemyError as exc:
        logger.debug("database error", exc_info=True)
        print(f"monitor-scheduler: database error: {exc.__class__.__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
