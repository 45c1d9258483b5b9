"""POST /api/cron/one-click-start: the operators' and cron's trigger, guarded by CRON_SECRET."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from core.domain import Mode
from web.auth import same_secret
from web.deps import Web, body_doc, json_body
from web.errors import mark_operator
from web.models import CronRequest, SummaryOut
from web.routes import error_responses

logger = logging.getLogger(__name__)

router = APIRouter(tags=["cron"])

cron_secret_header = APIKeyHeader(name="x-cron-secret", auto_error=False, description="The CRON_SECRET setting.")


def check_cron_secret(request: Request, web: Web, given: Annotated[str | None, Depends(cron_secret_header)]) -> None:
    secret = web.settings.CRON_SECRET
    if secret is None:
        # Never an open endpoint: without a secret there is nothing to check against.
        logger.error("refused POST /api/cron/one-click-start: CRON_SECRET is not set")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the cron endpoint is disabled: CRON_SECRET is not set")
    if not same_secret(given, secret.get_secret_value()):
        logger.warning("refused POST /api/cron/one-click-start: wrong or missing x-cron-secret")
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong or missing x-cron-secret header")
    mark_operator(request)  # whoever holds CRON_SECRET operates the scheduler


@router.post(
    "/api/cron/one-click-start",
    summary="Run one dispatch pass, or one user now",
    response_model=SummaryOut,
    responses=error_responses(400, 401, 404, 409, 413, 422, 503),
    openapi_extra=body_doc(CronRequest),
)
def one_click_start(
    web: Web,
    _secret: Annotated[None, Depends(check_cron_secret)],
    body: Annotated[CronRequest, Depends(json_body(CronRequest))],
) -> SummaryOut:
    """No body or `{}`: one pass (queue mode when REDIS_URL is set, else sync).
    `{"userId": ...}`: direct mode for that user. `{"mode": "sync"}`: a sync pass, no Redis needed."""
    mode = Mode(body.mode) if body.mode else None  # None: the services' default (Settings.default_mode)
    if body.userId is not None:
        summary, _snapshot = web.services.runs.run_now(body.userId, mode)
    else:
        summary = web.services.runs.dispatch_pass(mode)
    return SummaryOut(**summary.as_dict())
