"""The `web` and `login-link` subcommands (registered into monitor_scheduler.cli's parser): the
web server's command, part of the entry layer.

`web --embedded` is the newcomer's whole system in one process: SQLite (the default database),
migrations, a few demo users, a sync-mode dispatcher loop in a background thread, and sign-in
links printed for a demo admin and a demo user. It is a development mode, so it implies --dev.
"""

from __future__ import annotations

import argparse
import logging
import re
import threading

import uvicorn
from typing_extensions import override

from core.domain import Mode
from core.exceptions import ConfigurationError, InvalidInput
from core.scheduling import validate_user_id
from core.settings import Settings
from dispatcher.loop import DispatchLoop
from monitor_scheduler.demo import DEMO_USERS
from monitor_scheduler.wiring import App
from schema.migrate import upgrade
from web.app import create_app
from web.auth import sign_in_url
from web.state import WebState

logger = logging.getLogger(__name__)

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 10111
DEFAULT_BASE_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
EMBEDDED_DISPATCH_EVERY = 10.0
EMBEDDED_LINK_TTL_SECONDS = 24 * 3600  # still one-time; long enough to come back to the demo later
DEMO_ADMIN, DEMO_USER = "demo-admin", "demo-alice"


def cmd_login_link(app: App, args: argparse.Namespace) -> int:
    if app.settings.SECRET_KEY is None:
        raise ConfigurationError("SECRET_KEY is not set: cannot sign a link (a --dev server prints its own links)")
    if problem := next((p for p in app.settings.weak_secrets() if "SECRET_KEY" in p), None):
        raise ConfigurationError(problem)  # a server outside --dev refuses this key: no link it would not accept
    try:
        user_id = validate_user_id(args.user)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    ttl: int = args.ttl  # seconds, in range: checked by the parser (cli.link_ttl)
    print(sign_in_url(app.settings.WEB_BASE_URL, app.settings.SECRET_KEY.get_secret_value(), user_id, admin=args.admin, ttl_seconds=ttl))
    return 0


def cmd_sign_out(app: App, args: argparse.Namespace) -> int:
    try:
        user_id = validate_user_id(args.user)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    ended = app.services.sessions.revoke_user(user_id, admin_only=args.admin_only)
    print(f"ended {ended} {'admin ' if args.admin_only else ''}session(s) of {user_id!r}")
    return 0


def cmd_web(app: App, args: argparse.Namespace) -> int:
    api = create_app(app.services, dev=args.dev or args.embedded)  # refuses without SECRET_KEY unless dev
    web: WebState = api.state.web
    stop = threading.Event()
    loop_thread = _start_embedded(app, web, args, stop) if args.embedded else None
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    server = uvicorn.Server(uvicorn.Config(api, host=args.host, port=args.port, log_config=None, server_header=False))
    try:
        server.run()
    finally:
        stop.set()
        if loop_thread is not None:
            loop_thread.join(timeout=60)
    return 0


def base_url(settings: Settings, host: str, port: int) -> str:
    """WEB_BASE_URL, unless it is the default and the server listens elsewhere."""
    if settings.WEB_BASE_URL.rstrip("/") != DEFAULT_BASE_URL or (host, port) == (DEFAULT_HOST, DEFAULT_PORT):
        return settings.WEB_BASE_URL
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{port}"


def _start_embedded(app: App, web: WebState, args: argparse.Namespace, stop: threading.Event) -> threading.Thread:
    services = app.services
    upgrade(app.engine)
    users = services.schedules.seed_demo_users(DEMO_USERS)
    loop = DispatchLoop(lambda: services.runs.dispatch_pass(Mode.SYNC), EMBEDDED_DISPATCH_EVERY, stop=stop)
    thread = threading.Thread(target=loop.run, name="embedded-dispatcher", daemon=True)
    thread.start()
    url = base_url(services.settings, args.host, args.port)
    admin_link = sign_in_url(url, web.token_key, DEMO_ADMIN, admin=True, ttl_seconds=EMBEDDED_LINK_TTL_SECONDS)
    user_link = sign_in_url(url, web.token_key, DEMO_USER, admin=False, ttl_seconds=EMBEDDED_LINK_TTL_SECONDS)
    print(
        f"\nmonitor-scheduler (embedded): database {services.settings.DATABASE_URL}, sync-mode dispatcher every "
        f"{EMBEDDED_DISPATCH_EVERY:.0f} s running up to {services.settings.SYNC_THREADS} runs at once (SYNC_THREADS), demo users {', '.join(users)}\n"
        f"  sign in as the demo admin ({DEMO_ADMIN}): {admin_link}\n"
        f"  sign in as a demo user   ({DEMO_USER}): {user_link}\n"
        "  (each link works once; restart for new ones)\n",
        flush=True,
    )
    return thread


class RedactTokens(logging.Filter):
    """Keeps sign-in tokens out of the access log (they travel in /login?token=...)."""

    _TOKEN = re.compile(r"(token=)[^&\s]+")

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._TOKEN.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        return True
