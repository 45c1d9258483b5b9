"""GET /healthz (the process answers), GET /readyz (database, Redis unless sync mode, and the
dead-man check: a recent successful dispatch pass, no due user waiting too long) and GET /metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from web.deps import Web
from web.models import HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="The process is up")
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get("/readyz", response_model=ReadyOut, summary="Database reachable; Redis reachable or sync mode; dispatcher alive",
            responses={503: {"model": ReadyOut, "description": "Not ready"}})
def readyz(web: Web) -> JSONResponse:
    ready = web.service.readiness()
    body = ReadyOut(status="ready" if ready.ready else "unavailable", database=ready.database, redis=ready.redis, scheduler=ready.scheduler)
    return JSONResponse(body.model_dump(), status_code=200 if ready.ready else 503)


@router.get("/metrics", summary="Prometheus metrics, computed from the database at scrape time", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}}})
def metrics(web: Web) -> PlainTextResponse:
    return PlainTextResponse(generate_latest(web.metrics_registry).decode(), media_type=CONTENT_TYPE_LATEST)
