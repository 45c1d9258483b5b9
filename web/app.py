"""`create_app(services)`: the FastAPI application around the service layer (services.facade.Services,
the same object the CLI calls).

Errors are translated here, once: the project's exceptions and HTTP errors become JSON
`{"message": ...}` under /api (and for the health checks) and a small HTML page elsewhere; an
unexpected exception is logged with its traceback and answered with a generic 500, never shown.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Match, Mount
from starlette.types import Scope

from core.exceptions import (
    ConfigurationError,
    InvalidInput,
    LeaseHeld,
    MonitorSchedulerError,
    QueueUnavailable,
    RunNowTooSoon,
    UnknownUser,
)
from core.settings import Settings
from services.facade import Services
from services.sessions import SESSION_TTL
from web.auth import derived_key
from web.deps import MalformedBody
from web.errors import is_operator, lease_held_text
from web.middleware.body_limit import BodySizeLimit
from web.middleware.head import HeadAsGet
from web.routes import admin, cron, health, me, pages
from web.routes.pages import templates
from web.state import WebState

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "monitor_session"

# Swagger UI and ReDoc load their assets from a CDN with inline scripts; only our pages get the CSP.
_NO_CSP_PATHS = ("/docs", "/redoc")
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

_STATUS_FOR_ERROR: tuple[tuple[type[MonitorSchedulerError], int], ...] = (
    (InvalidInput, 422),
    (UnknownUser, 404),
    (LeaseHeld, 409),
    (RunNowTooSoon, 429),
    (QueueUnavailable, 503),
    # A setting this request needs is missing (queue mode without REDIS_URL, say): the server
    # cannot serve it as configured. One mapping, at the edge, for every such check below.
    (ConfigurationError, 503),
)
_PAGE_TITLES = {400: "Bad request", 401: "Please sign in", 403: "Not allowed", 404: "Not found", 409: "Busy", 413: "Too large",
                422: "Invalid input", 429: "Too soon", 503: "Unavailable"}


def resolve_secret(settings: Settings, dev: bool) -> str:
    """SECRET_KEY, or in dev mode a random per-process key; otherwise refuse to start. A short
    SECRET_KEY or CRON_SECRET is refused too, except in dev mode (a warning there)."""
    for problem in settings.weak_secrets():
        if not dev:
            raise ConfigurationError(problem)
        logger.warning("development mode: %s", problem)
    if settings.SECRET_KEY is not None:
        return settings.SECRET_KEY.get_secret_value()
    if not dev:
        raise ConfigurationError("SECRET_KEY is not set: the web app will not start without it (--dev uses a throwaway key)")
    logger.warning("development mode: SECRET_KEY is not set, using a random key for this process only "
                   "(sign-in links and sessions stop working when it restarts)")
    return secrets.token_urlsafe(32)


def create_app(services: Services, *, dev: bool = False) -> FastAPI:
    key = resolve_secret(services.settings, dev)
    web = WebState(services, token_key=key, session_key=derived_key(key, "monitor-scheduler session cookie"), dev=dev)
    api = FastAPI(
        title="monitor-scheduler",
        version="0.1.0",
        description="Per-user monitoring schedules: the signed-in user's own schedule, the admin API, "
        "the cron trigger and health checks. Authenticate with `Authorization: Bearer <JWT>` (docs/web.md).",
    )
    api.state.web = web
    # Innermost, so that its own refusals still get the session and security headers.
    api.add_middleware(BodySizeLimit, refuse=_refusal)
    api.add_middleware(
        SessionMiddleware,
        secret_key=web.session_key,
        session_cookie=SESSION_COOKIE,
        max_age=int(SESSION_TTL.total_seconds()),  # the WebSession row's expiresAt decides; the cookie just goes too
        same_site="lax",
        https_only=services.settings.WEB_BASE_URL.startswith("https://"),
    )
    api.middleware("http")(_security_headers)
    api.add_middleware(HeadAsGet)  # outermost: everything inside sees a GET
    api.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for module in (health, cron, me, admin, pages):
        api.include_router(module.router)
    _install_error_handlers(api)
    return api


async def _security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    response: Response = await call_next(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")  # sign-in tokens travel in URLs
    if not request.url.path.startswith(_NO_CSP_PATHS):
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
    if request.url.path.startswith(("/api/", "/settings", "/admin", "/login")):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


# --- errors ---------------------------------------------------------------------------------------


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(("/api/", "/healthz")) or path in ("/readyz", "/openapi.json")


def _error(request: Request, status_code: int, message: str, *, errors: list[dict[str, object]] | None = None, headers: dict[str, str] | None = None) -> Response:
    if _wants_json(request):
        body: dict[str, object] = {"message": message}
        if errors is not None:
            body["errors"] = errors
        return JSONResponse(body, status_code=status_code, headers=headers)
    if status_code == 401:
        return templates.TemplateResponse(request, "signed_out.html", {"message": message, "user": None, "csrf_token": "", "flash": None}, status_code=401)
    context = {"title": _PAGE_TITLES.get(status_code, "Error"), "message": message, "status_code": status_code,
               "user": None, "csrf_token": "", "flash": None}
    return templates.TemplateResponse(request, "error.html", context, status_code=status_code, headers=headers)


def _refusal(scope: Scope, status_code: int, message: str) -> Response:
    """An answer given by middleware before the app runs, in the same shape as the handlers'."""
    return _error(Request(scope), status_code, message)


def _field_errors(exc: RequestValidationError) -> list[dict[str, object]]:
    # Only location, message and type: `input`/`ctx` may hold arbitrary, non-JSON values.
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in exc.errors()]


def _validation_message(errors: list[dict[str, object]]) -> str:
    parts = []
    for e in errors[:5]:
        location = e["loc"]
        loc = ".".join(str(p) for p in location if p not in ("body", "query", "path")) if isinstance(location, list) else ""
        parts.append(f"{loc}: {e['msg']}" if loc else str(e["msg"]))
    return "invalid request: " + "; ".join(parts)


_ROUTABLE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request, fallback: str | None) -> str:
    """Every method some route serves at this path, HEAD wherever GET is (web.middleware.head).

    Asks each route whether it would take the path with each method, which works whatever the
    router nests (FastAPI wraps included routers, whose entries carry no `methods`). Under a
    mount (static files) the mounted app's own Allow header is kept.
    """
    probe = {"type": "http", "path": request.scope["path"], "root_path": request.scope.get("root_path", ""),
             "headers": [], "query_string": b""}
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    allowed = [method for method in _ROUTABLE_METHODS
               if any(route.matches({**probe, "method": method})[0] is Match.FULL for route in routes)]
    if "GET" in allowed:
        allowed.insert(1, "HEAD")
    return ", ".join(allowed) if allowed else (fallback or "")


def _install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(MonitorSchedulerError)
    async def project_error(request: Request, exc: MonitorSchedulerError) -> Response:
        status_code = next((code for cls, code in _STATUS_FOR_ERROR if isinstance(exc, cls)), 500)
        if status_code >= 500 or isinstance(exc, QueueUnavailable):
            logger.error("%s %s failed: %s", request.method, request.url.path, exc)
        if isinstance(exc, LeaseHeld):
            message = lease_held_text(exc, operator=is_operator(request))  # the token is for operators only
        else:
            message = "internal error" if status_code == 500 else str(exc)  # 503s say what is unavailable
        # RFC 9110: a 429 may say when to come back; Retry-After in seconds.
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RunNowTooSoon) else None
        return _error(request, status_code, message, headers=headers)

    @api.exception_handler(MalformedBody)
    async def malformed_body(request: Request, exc: MalformedBody) -> Response:
        return _error(request, 400, str(exc))

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        errors = _field_errors(exc)
        status_code = 400 if any(e["type"] == "json_invalid" for e in errors) else 422
        return _error(request, status_code, _validation_message(errors), errors=errors)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request, (headers or {}).get("Allow"))}
        return _error(request, exc.status_code, str(exc.detail), headers=headers)

    @api.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, exc: SQLAlchemyError) -> Response:
        logger.error("%s %s: database error: %s", request.method, request.url.path, exc.__class__.__name__, exc_info=exc)
        return _error(request, 503, "database unavailable")

    @api.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.error("%s %s crashed", request.method, request.url.path, exc_info=exc)
        return _error(request, 500, "internal error")

