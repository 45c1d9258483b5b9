"""/api/admin/...: every schedule, for callers whose token carries `admin: true`.

User ids may contain any printable character, "/" included, so a user is named in a query
parameter (`/schedule?userId=`, `/runs?userId=`), which no user id can make ambiguous. The older
`/schedules/{userId}[/run|/runs]` routes still answer for ids without "/", as one path segment:
a server decodes `%2F` before routing, so `x%2Fruns` could not be told from `x/runs` (it answered
x's history, not the user "x/runs"); a path with an encoded "/" is refused with 400.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status

from core.domain import Schedule, ScheduleFilter
from core.scheduling import MAX_USER_ID_LENGTH
from services.runs import HISTORY_LIMIT
from services.status import capacity_figures
from web.deps import AdminUser, Web, body_doc, json_body
from web.errors import mark_operator
from web.models import (
    USER_ID_PATTERN,
    AdminRunNowOut,
    AdminScheduleOut,
    AdminScheduleUpdate,
    CapacityOut,
    DispatcherStatusOut,
    OverviewOut,
    QueueHealthOut,
    RunOut,
    ScheduleListOut,
    SummaryOut,
    UnlockOut,
    aware,
)
from web.routes import error_responses



def operator_view(request: Request, _admin: AdminUser) -> None:
    """Admins see errors in full (a held lease names its holder)."""
    mark_operator(request)


router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(operator_view)])

UserIdQuery = Annotated[str, Query(alias="userId", min_length=1, max_length=MAX_USER_ID_LENGTH, pattern=USER_ID_PATTERN,
                                   description="The user id, any printable characters (URL-encoded)")]


def path_user_id(
    request: Request,
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_USER_ID_LENGTH, pattern=USER_ID_PATTERN,
                                 description="A user id without '/'; use the ?userId= routes for any id")],
) -> str:
    """The id from a `/schedules/{userId}...` path, only when the path can be read one way."""
    raw_path = request.scope.get("raw_path") or b""
    if b"%2f" in raw_path.lower():  # the id segment we matched may be only part of the real id
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            "a user id with '/' cannot be given in the path: use /api/admin/schedule?userId=... or /api/admin/runs?userId=...",
        )
    return user_id


UserIdPath = Annotated[str, Depends(path_user_id)]


@router.get("/schedules", response_model=ScheduleListOut, responses=error_responses(401, 403, 422), summary="List schedules")
def list_schedules(
    web: Web,
    _admin: AdminUser,
    filter: Annotated[ScheduleFilter | None, Query(description="due, running, failing, disabled, stale or paused")] = None,
    search: Annotated[str | None, Query(max_length=MAX_USER_ID_LENGTH, description="user id contains")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> ScheduleListOut:
    page = web.services.schedules.list_page(which=filter, search=search, limit=limit, offset=offset)
    return ScheduleListOut(
        items=[_out(web, row, page.now) for row in page.rows],
        limit=limit, offset=offset, nextOffset=offset + limit if page.has_more else None,
    )


@router.get("/overview", response_model=OverviewOut, responses=error_responses(401, 403), summary="Queue health and dispatcher status")
def overview(web: Web, _admin: AdminUser) -> OverviewOut:
    queue = web.services.status.queue_health()
    status_ = web.services.status.dispatcher_status()
    capacity = web.services.status.capacity()
    return OverviewOut(
        capacity=CapacityOut.model_validate(capacity_figures(capacity)),
        queue=QueueHealthOut(
            mode=queue.mode, reachable=queue.reachable, queueLength=queue.queue_length, workers=queue.workers,
            failedJobs=queue.failed_jobs, startedJobs=queue.started_jobs, error=queue.error,
        ),
        dispatcher=DispatcherStatusOut(
            lastPass=SummaryOut(**status_.last_pass.as_dict()) if status_.last_pass else None,
            lastPassAt=status_.last_pass_at,
            lastRunFinishedAt=aware(status_.last_run_finished_at),
            dueNow=status_.due_now,
            oldestDueAgeSeconds=status_.oldest_due_age_seconds,
        ),
    )


@router.post("/unlock", response_model=UnlockOut, responses=error_responses(401, 403), summary="Release expired leases")
def unlock(web: Web, _admin: AdminUser) -> UnlockOut:
    released = web.services.runs.unlock_expired()
    return UnlockOut(unlocked=released, count=len(released))


# --- one user, named in a query parameter ---------------------------------------------------------


def _out(web: Web, schedule: Schedule, now: datetime) -> AdminScheduleOut:
    return AdminScheduleOut.of(schedule, now, web.services.schedules.effective_policy(schedule))


def _history(web: Web, user_id: str, limit: int) -> list[RunOut]:
    return [RunOut.of(run) for run in web.services.runs.history(user_id, limit)]


def _run(web: Web, user_id: str) -> AdminRunNowOut:
    summary, snapshot = web.services.runs.run_now(user_id)
    assert snapshot.schedule is not None
    return AdminRunNowOut(summary=SummaryOut(**summary.as_dict()), schedule=_out(web, snapshot.schedule, snapshot.now))


def _read(web: Web, user_id: str) -> AdminScheduleOut:
    snapshot = web.services.schedules.read(user_id)
    if snapshot.schedule is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no schedule for user {user_id!r}")
    return _out(web, snapshot.schedule, snapshot.now)


def _update(web: Web, user_id: str, body: AdminScheduleUpdate) -> AdminScheduleOut:
    snapshot = web.services.schedules.update(user_id, enabled=body.enabled, interval=body.intervalMinutes, create=False,
                                             calendar=body.calendar_change(), policy=body.policy_change())
    assert snapshot.schedule is not None
    return _out(web, snapshot.schedule, snapshot.now)


HistoryLimit = Annotated[int, Query(ge=1, le=200)]
Body = Annotated[AdminScheduleUpdate, Depends(json_body(AdminScheduleUpdate))]


@router.get("/schedule", response_model=AdminScheduleOut, responses=error_responses(401, 403, 404, 422), summary="One schedule")
def read_schedule(web: Web, _admin: AdminUser, user_id: UserIdQuery) -> AdminScheduleOut:
    return _read(web, user_id)


@router.patch(
    "/schedule", response_model=AdminScheduleOut, responses=error_responses(400, 401, 403, 404, 413, 422),
    openapi_extra=body_doc(AdminScheduleUpdate), summary="Change any schedule",
)
def update_schedule(web: Web, _admin: AdminUser, user_id: UserIdQuery, body: Body) -> AdminScheduleOut:
    return _update(web, user_id, body)


@router.post("/schedule/resume", response_model=AdminScheduleOut, responses=error_responses(401, 403, 404, 422),
             summary="Resume a paused schedule",
             description="As the user's own resume: runs again from its next slot from now (no burst of the missed slots), "
                         "failed-slot count back to 0; a schedule that is not paused is left as it is (200).")
def resume_schedule(web: Web, _admin: AdminUser, user_id: UserIdQuery) -> AdminScheduleOut:
    resumed = web.services.schedules.resume(user_id)
    return _out(web, resumed.schedule, resumed.now)


@router.get("/runs", response_model=list[RunOut], responses=error_responses(401, 403, 422), summary="A user's run history")
def user_runs(web: Web, _admin: AdminUser, user_id: UserIdQuery, limit: HistoryLimit = HISTORY_LIMIT) -> list[RunOut]:
    return _history(web, user_id, limit)


@router.post("/runs", response_model=AdminRunNowOut, responses=error_responses(401, 403, 404, 409, 422, 503), summary="Run a user now")
def run_user(web: Web, _admin: AdminUser, user_id: UserIdQuery) -> AdminRunNowOut:
    return _run(web, user_id)


# --- one user, named in the path (ids without "/"; kept for existing callers) ----------------------
# One segment each: a path with more segments than a route has is not this route (404, or 405
# when another method serves it), never a user id with "/" in it.


@router.get("/schedules/{user_id}/runs", response_model=list[RunOut], responses=error_responses(400, 401, 403, 422),
            summary="A user's run history (id without '/')", deprecated=True)
def user_runs_by_path(web: Web, _admin: AdminUser, user_id: UserIdPath, limit: HistoryLimit = HISTORY_LIMIT) -> list[RunOut]:
    return _history(web, user_id, limit)


@router.post("/schedules/{user_id}/run", response_model=AdminRunNowOut, responses=error_responses(400, 401, 403, 404, 409, 422, 503),
             summary="Run a user now (id without '/')", deprecated=True)
def run_user_by_path(web: Web, _admin: AdminUser, user_id: UserIdPath) -> AdminRunNowOut:
    return _run(web, user_id)


@router.get("/schedules/{user_id}", response_model=AdminScheduleOut, responses=error_responses(400, 401, 403, 404, 422),
            summary="One schedule (id without '/')", deprecated=True)
def read_schedule_by_path(web: Web, _admin: AdminUser, user_id: UserIdPath) -> AdminScheduleOut:
    return _read(web, user_id)


@router.patch(
    "/schedules/{user_id}", response_model=AdminScheduleOut, responses=error_responses(400, 401, 403, 404, 413, 422),
    openapi_extra=body_doc(AdminScheduleUpdate), summary="Change any schedule (id without '/')", deprecated=True,
)
def update_schedule_by_path(web: Web, _admin: AdminUser, user_id: UserIdPath, body: Body) -> AdminScheduleOut:
    return _update(web, user_id, body)
