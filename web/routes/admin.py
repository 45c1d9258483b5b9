"""/api/admin/...: every schedule, for callers whose token carries `admin: true`.

User ids may contain any printable character, "/" included, hence the `:path` converter; the
`/runs` and `/run` routes are declared before the bare one so their suffix is not read as id.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status

from monitor_scheduler.repository import ScheduleFilter
from monitor_scheduler.scheduling import MAX_USER_ID_LENGTH
from web import services
from web.deps import AdminUser, Web, body_doc, json_body
from web.errors import mark_operator
from web.models import (
    USER_ID_PATTERN,
    AdminRunNowOut,
    AdminScheduleOut,
    DispatcherStatusOut,
    OverviewOut,
    QueueHealthOut,
    RunOut,
    ScheduleListOut,
    ScheduleUpdate,
    SummaryOut,
    UnlockOut,
    aware,
)
from web.routes import error_responses



def operator_view(request: Request, _admin: AdminUser) -> None:
    """Admins see errors in full (a held lease names its holder)."""
    mark_operator(request)


router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(operator_view)])

UserIdPath = Annotated[str, Path(min_length=1, max_length=MAX_USER_ID_LENGTH, pattern=USER_ID_PATTERN)]


@router.get("/schedules", response_model=ScheduleListOut, responses=error_responses(401, 403, 422), summary="List schedules")
def list_schedules(
    web: Web,
    _admin: AdminUser,
    filter: Annotated[ScheduleFilter | None, Query(description="due, running, failing, disabled or stale")] = None,
    search: Annotated[str | None, Query(max_length=MAX_USER_ID_LENGTH, description="user id contains")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> ScheduleListOut:
    page = services.list_page(web, which=filter, search=search, limit=limit, offset=offset)
    return ScheduleListOut(
        items=[AdminScheduleOut.of(row, page.now) for row in page.rows],
        limit=limit, offset=offset, nextOffset=offset + limit if page.has_more else None,
    )


@router.get("/overview", response_model=OverviewOut, responses=error_responses(401, 403), summary="Queue health and dispatcher status")
def overview(web: Web, _admin: AdminUser) -> OverviewOut:
    queue = services.queue_health(web)
    status_ = services.dispatcher_status(web)
    return OverviewOut(
        queue=QueueHealthOut(
            mode=queue.mode, reachable=queue.reachable, queueLength=queue.queue_length, workers=queue.workers,  # type: ignore[arg-type]
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
    released = services.unlock_expired(web)
    return UnlockOut(unlocked=released, count=len(released))


@router.get("/schedules/{user_id:path}/runs", response_model=list[RunOut], responses=error_responses(401, 403, 422), summary="A user's run history")
def user_runs(
    web: Web, _admin: AdminUser, user_id: UserIdPath, limit: Annotated[int, Query(ge=1, le=200)] = services.HISTORY_LIMIT
) -> list[RunOut]:
    return [RunOut.of(run) for run in services.history(web, user_id, limit)]


@router.post("/schedules/{user_id:path}/run", response_model=AdminRunNowOut, responses=error_responses(401, 403, 404, 409, 422, 503), summary="Run a user now")
def run_user(web: Web, _admin: AdminUser, user_id: UserIdPath) -> AdminRunNowOut:
    summary, snapshot = services.run_now(web, user_id)
    assert snapshot.schedule is not None
    return AdminRunNowOut(summary=SummaryOut(**summary.as_dict()), schedule=AdminScheduleOut.of(snapshot.schedule, snapshot.now))


@router.get("/schedules/{user_id:path}", response_model=AdminScheduleOut, responses=error_responses(401, 403, 404, 422), summary="One schedule")
def read_schedule(web: Web, _admin: AdminUser, user_id: UserIdPath) -> AdminScheduleOut:
    snapshot = services.read_schedule(web, user_id)
    if snapshot.schedule is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no schedule for user {user_id!r}")
    return AdminScheduleOut.of(snapshot.schedule, snapshot.now)


@router.patch(
    "/schedules/{user_id:path}", response_model=AdminScheduleOut, responses=error_responses(400, 401, 403, 404, 413, 422),
    openapi_extra=body_doc(ScheduleUpdate), summary="Change any schedule",
)
def update_schedule(
    web: Web, _admin: AdminUser, user_id: UserIdPath, body: Annotated[ScheduleUpdate, Depends(json_body(ScheduleUpdate))]
) -> AdminScheduleOut:
    snapshot = services.update_schedule(web, user_id, enabled=body.enabled, interval=body.intervalMinutes, create=False)
    assert snapshot.schedule is not None
    return AdminScheduleOut.of(snapshot.schedule, snapshot.now)
