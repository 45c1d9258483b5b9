"""GET /healthz (the process answers), GET /readyz (this process can serve: database, Redis unless
sync mode), GET /healthz/scheduler (the dead-man check: a recent successful dispatch pass, no due
user waiting too long) and GET /metrics.

The dead-man check is not part of readiness: a lagging dispatcher must not take the web app out
of a load balancer, since that is when operators need its admin page."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from web.deps import Web
from web.models import HealthOut, ReadyOut, SchedulerHealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="The process is up")
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get("/readyz", response_model=ReadyOut, summary="This process can serve: database reachable; Redis reachable or sync mode",
            responses={503: {"model": ReadyOut, "description": "Not ready"}})
def readyz(web: Web) -> JSONResponse:
    ready = web.services.status.readiness()
    body = ReadyOut(status="ready" if ready.ready else "unavailable", database=ready.database, redis=ready.redis)
    return JSONResponse(body.model_dump(), status_code=200 if ready.ready else 503)


@router.get("/healthz/scheduler", response_model=SchedulerHealthOut,
            summary="The dead-man check: a dispatch pass succeeded recently and no due user waits too long",
            responses={503: {"model": SchedulerHealthOut, "description": "Unhealthy: the problems are listed"}})
def scheduler_health(web: Web) -> JSONResponse:
    health = web.services.status.scheduler_health()
    body = SchedulerHealthOut.model_validate(health.as_json())
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if health.ok else 503)


@router.get("/metrics", summary="Prometheus metrics, computed from the database at scrape time", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}}})
def metrics(web: Web) -> PlainTextResponse:
    return PlainTextResponse(generate_latest(web.metrics_registry).decode(), media_type=CONTENT_TYPE_LATEST)
