"""/api/schedules/me: the signed-in user's own schedule. The user id comes only from the token or
session; there is no parameter that could name another user (unknown body fields are refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status

from services.runs import HISTORY_LIMIT
from web.deps import CurrentUser, Web, body_doc, json_body
from core.calendar import upcoming_slots
from core.domain import Schedule
from web.models import NEXT_RUNS_SHOWN, PreviewOut, RunNowOut, RunOut, ScheduleOut, ScheduleUpdate, SummaryOut
from web.routes import error_responses

router = APIRouter(prefix="/api/schedules/me", tags=["my schedule"])


@router.get("", response_model=ScheduleOut, responses=error_responses(401, 404), summary="My schedule")
def read_mine(web: Web, user: CurrentUser) -> ScheduleOut:
    snapshot = web.services.schedules.read(user.user_id)
    if snapshot.schedule is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "you have no schedule yet: PATCH one to create it")
    return _out(web, snapshot.schedule, snapshot.now)


def _out(web: Web, schedule: Schedule, now: datetime) -> ScheduleOut:
    return ScheduleOut.of(schedule, now, web.services.schedules.effective_policy(schedule))


@router.patch(
    "", response_model=ScheduleOut, responses=error_responses(400, 401, 403, 413, 422),
    openapi_extra=body_doc(ScheduleUpdate), summary="Change (or create) my schedule",
)
def update_mine(
    web: Web, user: CurrentUser, body: Annotated[ScheduleUpdate, Depends(json_body(ScheduleUpdate))]
) -> ScheduleOut:
    snapshot = web.services.schedules.update(user.user_id, enabled=body.enabled, interval=body.intervalMinutes, create=True,
                                             calendar=body.calendar_change())
    assert snapshot.schedule is not None
    return _out(web, snapshot.schedule, snapshot.now)


@router.get("/preview", response_model=PreviewOut, responses=error_responses(401, 422), summary="Preview the slots of an expression or interval",
            description="What the settings page shows as the user types: the next slots of `cron` in `timeZone`, or of `interval`, "
                        "computed by the scheduler's own rule; neither: those of my stored schedule. Nothing is written.")
def preview(
    web: Web, user: CurrentUser,
    cron: Annotated[str | None, Query(max_length=100)] = None,
    timeZone: Annotated[str | None, Query(max_length=64)] = None,
    interval: Annotated[int | None, Query(ge=1, le=1440)] = None,
    count: Annotated[int, Query(ge=1, le=50)] = NEXT_RUNS_SHOWN,
) -> PreviewOut:
    if cron is None and interval is None:  # my stored schedule's next slots (none without one)
        snapshot = web.services.schedules.read(user.user_id)
        if snapshot.schedule is None:
            return PreviewOut(timeZone="UTC", slots=[])
        return PreviewOut.of(upcoming_slots(snapshot.schedule, snapshot.now, count), snapshot.schedule.time_zone)
    slots = web.services.schedules.preview(cron=cron, time_zone=timeZone, interval=interval, count=count)
    return PreviewOut.of(slots, (timeZone or "UTC") if cron is not None else "UTC")


@router.post("/run", response_model=RunNowOut, responses=error_responses(401, 403, 404, 409, 429, 503), summary="Run my monitor now",
             description="At most once per RUN_NOW_COOLDOWN seconds (default 60): sooner is 429 with a Retry-After header (seconds).")
def run_mine(web: Web, user: CurrentUser) -> RunNowOut:
    summary, snapshot = web.services.runs.run_now(user.user_id, cooldown=True)
    assert snapshot.schedule is not None
    return RunNowOut(summary=SummaryOut(**summary.as_dict()), schedule=_out(web, snapshot.schedule, snapshot.now))


@router.post("/resume", response_model=ScheduleOut, responses=error_responses(401, 403, 404), summary="Resume my paused schedule",
             description="A schedule paused after failed slots runs again from its next slot from now (the slots missed while paused "
                         "are not run), its failed-slot count back to 0. Not paused: nothing changes (200, the schedule as it is).")
def resume_mine(web: Web, user: CurrentUser) -> ScheduleOut:
    resumed = web.services.schedules.resume(user.user_id)
    return _out(web, resumed.schedule, resumed.now)


@router.get("/runs", response_model=list[RunOut], responses=error_responses(401, 422), summary="My run history, newest first")
def my_runs(web: Web, user: CurrentUser, limit: Annotated[int, Query(ge=1, le=200)] = HISTORY_LIMIT) -> list[RunOut]:
    return [RunOut.of(run) for run in web.services.runs.history(user.user_id, limit)]
