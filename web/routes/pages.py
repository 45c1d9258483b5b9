"""HTML pages: sign-in by link (asking first in another user's live session), the user's
/settings, the /admin overview, and their form posts.

Form posts carry the session's CSRF token and answer with a redirect (post/redirect/get), except
a rejected settings form, which is shown again with the error next to the field and status 422.
Templates autoescape everything; user ids and errors are never marked safe.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from core.calendar import upcoming_slots, zone_names
from core.clock import utc_text
from core.exceptions import InvalidInput, LeaseHeld, MonitorSchedulerError, RunNowTooSoon, UnknownUser
from core.domain import RunState, Schedule, ScheduleFilter
from core.scheduling import MAX_INTERVAL_MINUTES, MIN_INTERVAL_MINUTES
from web.auth import AuthError, Principal, check_sign_in_token, consume_sign_in_token
from web.chart import build_chart
from services.status import CHART_HOURS
from web.deps import (
    SESSION_ID,
    FormCsrf,
    PageAdmin,
    PageUser,
    Web,
    session_csrf,
    session_principal,
    session_secret,
    session_store,
)
from web.errors import lease_held_text
from web.middleware.head import is_head
from web.models import NEXT_RUNS_SHOWN, PreviewOut
from services.results import split_result
from services.schedules import USE_DEFAULT, CalendarChange, FailurePolicy, PolicyChange

logger = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
ADMIN_PAGE_SIZE = 50

router = APIRouter(include_in_schema=False)


def _iso(moment: datetime | None) -> str:
    """For <time datetime=...>, which the page's script shows in the reader's zone."""
    return utc_text(moment, empty="")


def _utc(moment: datetime | None) -> str:
    """The text shown before (or without) the script: the same formatter, to the second."""
    return "—" if moment is None else utc_text(moment, sep=" ")[:-5] + " UTC"


def status_label(schedule: Schedule | None, now: datetime) -> str:
    if schedule is None:
        return "no schedule"
    if schedule.is_running(now):
        return "queued" if schedule.state is RunState.QUEUED else "running"
    if schedule.locked_by is not None:
        return "stale lease"
    if schedule.paused:
        return "paused"
    return schedule.last_status or "never run"


def result_text(stored: str | None) -> str:
    """A run's result for people: its JSON indented (escaped by the template like any text), or
    the note saying why it was not kept."""
    value, note = split_result(stored)
    if note is not None:
        return note
    return "" if value is None else json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def _seconds(value: int) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if value % size == 0:
            return f"{value // size} {unit}"
    return f"{value} s"


def policy_text(policy: FailurePolicy) -> str:
    """What happens when a run fails, in one line ("retried up to 3 times, first after 30 s; ...")."""
    if policy.retries:
        retries = (f"retried up to {policy.retries} time{'s' if policy.retries != 1 else ''} in the same slot, "
                   f"first after {_seconds(policy.backoff_seconds)} (then longer)")
    else:
        retries = "not retried (the next slot runs as usual)"
    pause = f"paused after {policy.pause_after} failed slot{'s' if policy.pause_after != 1 else ''} in a row" if policy.pause_after else "never paused"
    return f"{retries}; {pause}"


def percent(fraction: float | None) -> str:
    """A progress fraction as people read it: "40 %" (no decimals; an unknown fraction is "")."""
    return "" if fraction is None else f"{fraction * 100:.0f} %"


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATE_DIR), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(iso=_iso, utc=_utc, percent=percent, result_text=result_text, seconds=_seconds)
    env.globals.update(status_label=status_label, policy_text=policy_text, MIN_INTERVAL=MIN_INTERVAL_MINUTES, MAX_INTERVAL=MAX_INTERVAL_MINUTES)
    return env


templates = Jinja2Templates(env=_environment())


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.update(
        user=session_principal(request),
        csrf_token=session_csrf(request) or "",
        flash=request.session.pop("flash", None),
    )
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def flash(request: Request, kind: str, text: str) -> None:
    request.session["flash"] = [kind, text]


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)


# --- signing in and out ---------------------------------------------------------------------------


@router.get("/")
def home(request: Request) -> Response:
    if session_principal(request) is not None:
        return see_other("/settings")
    return render(request, "signed_out.html", message="Sign in with the link from your application.")


@router.get("/login")
def login(request: Request, web: Web, token: Annotated[str, Query(max_length=4096)] = "") -> Response:
    if is_head(request.scope):
        # A mail client's link scanner probing with HEAD must not use up the one-time link.
        return render(request, "signed_out.html", message="Open this link in a browser to sign in.")
    current = session_principal(request)
    if current is not None:
        # Someone is signed in here: a link (possibly from another site: the Lax cookie comes
        # along) must not silently swap them for another user. The token is only read, not used;
        # a bad, expired or used one is refused below exactly as without a session (not after
        # asking a question whose answer could only fail).
        try:
            wanted: Principal | None = check_sign_in_token(web.token_key, token, session_store(web))
        except AuthError:
            wanted = None
        if wanted is not None and wanted.user_id != current.user_id:
            logger.info("sign-in link for user=%s opened in a session of user=%s: asking first", wanted.user_id, current.user_id)
            return render(request, "switch_user.html", current=current, wanted=wanted, token=token)
    return _sign_in_with(request, web, token)


@router.post("/login", dependencies=[FormCsrf])
def switch_user(request: Request, web: Web, token: Annotated[str, Form(max_length=4096)]) -> Response:
    """The answer to the question `GET /login` asked: switch to the link's user. The session's own
    CSRF token proves the form is this site's; the one-time token is used here, not before."""
    return _sign_in_with(request, web, token)


def _sign_in_with(request: Request, web: Web, token: str) -> Response:
    try:
        principal = consume_sign_in_token(web.token_key, token, session_store(web))
    except AuthError as exc:
        logger.info("sign-in refused: %s", exc)
        return render(request, "signed_out.html", status.HTTP_401_UNAUTHORIZED,
                      message="This sign-in link is invalid, expired or was already used. Ask for a new one.")
    # A fresh session on every sign-in: nothing from before (another user, an old CSRF token) survives.
    store = session_store(web)
    previous = session_secret(request)
    if previous is not None:
        store.end(previous)
    request.session.clear()
    request.session[SESSION_ID] = store.start(principal.user_id, admin=principal.admin)
    logger.info("signed in user=%s admin=%s", principal.user_id, principal.admin)
    return see_other("/admin" if principal.admin else "/settings")


@router.post("/logout", dependencies=[FormCsrf])
def logout(request: Request, web: Web) -> Response:
    # The row goes: this cookie, and any copy of it, is nobody from the next request on.
    secret = session_secret(request)
    if secret is not None:
        session_store(web).end(secret)
    request.session.clear()
    request.state.principal = None
    return render(request, "signed_out.html", message="You are signed out.")


# --- the user's own settings ----------------------------------------------------------------------


@dataclass(frozen=True)
class CalendarForm:
    """The settings form's calendar fields as typed (re-shown with the error after a refusal)."""

    kind: str = "interval"
    cron: str = ""
    time_zone: str = "UTC"
    spread_minutes: str = "0"
    error: str | None = None

    @classmethod
    def of(cls, schedule: Schedule | None) -> CalendarForm:
        if schedule is None or schedule.cron_expr is None:
            return cls(time_zone=schedule.time_zone if schedule else "UTC")
        return cls("cron", schedule.cron_expr, schedule.time_zone, str(schedule.spread_seconds // 60))


def _settings_page(request: Request, web: Web, user_id: str, *, status_code: int = 200, error: str | None = None,
                   form_interval: str | None = None, form_enabled: bool | None = None,
                   calendar: CalendarForm | None = None, policy_error: str | None = None) -> HTMLResponse:
    snapshot = web.services.schedules.read(user_id)
    schedule = snapshot.schedule
    form = calendar or CalendarForm.of(schedule)
    preview = PreviewOut.of(upcoming_slots(schedule, snapshot.now, NEXT_RUNS_SHOWN), schedule.time_zone).slots if schedule and not schedule.paused else []
    return render(
        request, "settings.html", status_code,
        schedule=schedule,
        now=snapshot.now,
        runs=web.services.runs.history(user_id) if schedule else [],
        error=error,
        form_interval=form_interval if form_interval is not None else (schedule.interval_minutes if schedule else web.settings.DEFAULT_INTERVAL_MINUTES),
        form_enabled=form_enabled if form_enabled is not None else (schedule.enabled if schedule else True),
        mode=web.settings.default_mode.value,
        cooldown=web.settings.RUN_NOW_COOLDOWN,
        form_kind=form.kind, form_cron=form.cron, form_zone=form.time_zone, form_spread=form.spread_minutes,
        cron_error=form.error, zones=zone_names(), preview=preview,
        policy=web.services.schedules.effective_policy(schedule) if schedule else None,
        policy_defaults=web.services.schedules.policy_defaults, policy_error=policy_error,
    )


@router.get("/settings")
def settings_page(request: Request, web: Web, user: PageUser) -> Response:
    return _settings_page(request, web, user.user_id)


@router.post("/settings", dependencies=[FormCsrf])
def save_settings(
    request: Request, web: Web, user: PageUser,
    interval: Annotated[str, Form(max_length=32)] = "",
    enabled: Annotated[str | None, Form(max_length=8)] = None,
    kind: Annotated[str, Form(pattern="^(interval|cron)$")] = "interval",
    cron: Annotated[str, Form(max_length=100)] = "",
    time_zone: Annotated[str, Form(max_length=64)] = "UTC",
    spread: Annotated[str, Form(max_length=8)] = "0",
) -> Response:
    form = CalendarForm(kind, cron, time_zone, spread)
    try:
        if kind == "cron":
            # The page asks for minutes; the rule (and its message) is the service's, in any unit.
            change = CalendarChange(cron=cron, time_zone=time_zone, spread=f"{spread.strip() or '0'}m")
            web.services.schedules.update(user.user_id, enabled=enabled is not None, interval=None, create=True, calendar=change)
        else:
            web.services.schedules.update(user.user_id, enabled=enabled is not None, interval=interval, create=True)
    except InvalidInput as exc:
        calendar_error = str(exc) if kind == "cron" else None
        return _settings_page(request, web, user.user_id, status_code=422, error=None if calendar_error else str(exc),
                              form_interval=interval, form_enabled=enabled is not None,
                              calendar=replace(form, error=calendar_error))
    flash(request, "ok", "Saved.")
    return see_other("/settings")


@router.post("/settings/resume", dependencies=[FormCsrf])
def resume_mine(request: Request, web: Web, user: PageUser) -> Response:
    _resume_and_flash(request, web, user.user_id)
    return see_other("/settings")


def _resume_and_flash(request: Request, web: Web, user_id: str) -> None:
    try:
        resumed = web.services.schedules.resume(user_id)
    except UnknownUser:
        flash(request, "error", f"There is no schedule of {user_id} to resume.")
        return
    if resumed.resumed:
        flash(request, "ok", f"Resumed {user_id}: the next run is at its next slot from now ({_utc(resumed.schedule.next_run_at)}).")
    else:
        flash(request, "ok", f"{user_id} was not paused: nothing changed.")


def policy_form(
    retries: Annotated[str, Form(max_length=16)] = "",
    retry_backoff: Annotated[str, Form(max_length=16)] = "",
    pause_after: Annotated[str, Form(max_length=16)] = "",
) -> PolicyChange:
    """The policy form's fields (settings page and admin rows): an empty one puts the settings
    default back; the service checks the rest."""
    def asked(text: str) -> object:
        return USE_DEFAULT if text.strip() == "" else text

    return PolicyChange(retries=asked(retries), retry_backoff=asked(retry_backoff), pause_after=asked(pause_after))


Policy = Annotated[PolicyChange, Depends(policy_form)]


@router.post("/settings/policy", dependencies=[FormCsrf])
def save_my_policy(request: Request, web: Web, user: PageAdmin, policy: Policy) -> Response:
    """An admin's own schedule (users see the policy, only admins change it: PageAdmin)."""
    try:
        web.services.schedules.update(user.user_id, enabled=None, interval=None, create=False, policy=policy)
    except MonitorSchedulerError as exc:
        return _settings_page(request, web, user.user_id, status_code=422, policy_error=str(exc))
    flash(request, "ok", "Saved.")
    return see_other("/settings")




@router.post("/settings/run", dependencies=[FormCsrf])
def run_mine(request: Request, web: Web, user: PageUser) -> Response:
    _run_and_flash(request, web, user.user_id, operator=False)
    return see_other("/settings")


def _run_and_flash(request: Request, web: Web, user_id: str, *, operator: bool) -> None:
    """A user's own "Run now" obeys RUN_NOW_COOLDOWN; an admin's (operator) does not."""
    try:
        summary, _ = web.services.runs.run_now(user_id, cooldown=not operator)
    except MonitorSchedulerError as exc:
        flash(request, "error", _run_error_text(exc, operator=operator))
        return
    # "queued": the settings page drops the note once the run has left the queue (settings.html, app.js).
    if summary.enqueued:
        flash(request, "queued", f"Run of {user_id} queued for a worker.")
    else:
        flash(request, "ok", f"Run of {user_id} finished.")


def _run_error_text(exc: MonitorSchedulerError, *, operator: bool) -> str:
    if isinstance(exc, LeaseHeld):
        return lease_held_text(exc, operator=operator)
    if isinstance(exc, UnknownUser):
        return "There is no schedule to run yet: save your settings first."
    if isinstance(exc, RunNowTooSoon):
        return (f"You asked for a run less than {exc.cooldown} seconds ago: \"Run now\" works once every "
                f"{exc.cooldown} seconds. Try again in {exc.retry_after} seconds.")
    return str(exc)


# --- admin ----------------------------------------------------------------------------------------


def _admin_url(filter: str | None, q: str | None, page: int) -> str:
    params = {k: v for k, v in (("filter", filter), ("q", q), ("page", str(page) if page > 1 else None)) if v}
    return "/admin" + ("?" + urlencode(params) if params else "")


def _parse_filter(value: str | None) -> ScheduleFilter | None:
    try:
        return ScheduleFilter(value) if value else None
    except ValueError:
        raise HTTPException(422, f"unknown filter {value!r}") from None


@router.get("/admin")
def admin_page(
    request: Request, web: Web, _admin: PageAdmin,
    filter: Annotated[str | None, Query(max_length=16)] = None,
    q: Annotated[str | None, Query(max_length=64)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    which = _parse_filter(filter)
    rows = web.services.schedules.list_page(which=which, search=q, limit=ADMIN_PAGE_SIZE, offset=(page - 1) * ADMIN_PAGE_SIZE)
    overview = web.services.status
    chart_end, samples = overview.capacity_history(CHART_HOURS)
    return render(
        request, "admin.html",
        rows=rows.rows, now=rows.now, has_more=rows.has_more, page=page,
        filter=which.value if which else None, q=q or "",
        filters=[f.value for f in ScheduleFilter], effective_policy=web.services.schedules.effective_policy,
        queue=overview.queue_health(), dispatcher=overview.dispatcher_status(),
        capacity=overview.capacity(), chart=build_chart(samples, end=chart_end, hours=CHART_HOURS), chart_hours=CHART_HOURS,
        here=_admin_url(which.value if which else None, q, page),
        prev_url=_admin_url(which.value if which else None, q, page - 1) if page > 1 else None,
        next_url=_admin_url(which.value if which else None, q, page + 1) if rows.has_more else None,
    )


def _back(row: AdminRow) -> RedirectResponse:
    return see_other(_admin_url(row.which.value if row.which else None, row.q, row.page))


@dataclass(frozen=True)
class AdminRow:
    """Who an admin page's row form is about, and where to go back to (filter, search, page),
    all checked before anything is changed."""

    user_id: str
    which: ScheduleFilter | None
    q: str | None
    page: int


def admin_row(
    user_id: Annotated[str, Form(max_length=64)],
    filter: Annotated[str | None, Form(max_length=16)] = None,
    q: Annotated[str | None, Form(max_length=64)] = None,
    page: Annotated[int, Form(ge=1, le=100_000)] = 1,
) -> AdminRow:
    return AdminRow(user_id, _parse_filter(filter), q, page)


Row = Annotated[AdminRow, Depends(admin_row)]


@router.post("/admin/schedules/update", dependencies=[FormCsrf])
def admin_update(
    request: Request, web: Web, _admin: PageAdmin, row: Row,
    interval: Annotated[str | None, Form(max_length=32)] = None,
    enabled: Annotated[str | None, Form(pattern="^[01]$")] = None,
) -> Response:
    try:
        web.services.schedules.update(
            row.user_id, enabled=None if enabled is None else enabled == "1", interval=interval or None, create=False
        )
        flash(request, "ok", f"Saved {row.user_id}.")
    except MonitorSchedulerError as exc:
        flash(request, "error", f"{row.user_id}: {exc}")
    return _back(row)


@router.post("/admin/schedules/policy", dependencies=[FormCsrf])
def admin_policy(request: Request, web: Web, _admin: PageAdmin, row: Row, policy: Policy) -> Response:
    try:
        web.services.schedules.update(row.user_id, enabled=None, interval=None, create=False, policy=policy)
        flash(request, "ok", f"Saved {row.user_id}.")
    except MonitorSchedulerError as exc:
        flash(request, "error", f"{row.user_id}: {exc} (nothing saved)")
    return _back(row)


@router.post("/admin/schedules/resume", dependencies=[FormCsrf])
def admin_resume(request: Request, web: Web, _admin: PageAdmin, row: Row) -> Response:
    _resume_and_flash(request, web, row.user_id)
    return _back(row)


@router.post("/admin/schedules/run", dependencies=[FormCsrf])
def admin_run(request: Request, web: Web, _admin: PageAdmin, row: Row) -> Response:
    _run_and_flash(request, web, row.user_id, operator=True)
    return _back(row)


@router.post("/admin/unlock", dependencies=[FormCsrf])
def admin_unlock(request: Request, web: Web, _admin: PageAdmin) -> Response:
    released = web.services.runs.unlock_expired()
    flash(request, "ok", f"Unlocked {len(released)} expired lease(s)." + (" " + ", ".join(released[:10]) if released else ""))
    return see_other("/admin")
