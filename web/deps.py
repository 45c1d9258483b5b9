"""FastAPI dependencies: the web state (and through it the service layer), who the caller is (Bearer JWT or session cookie), admin-only,
CSRF checks, and strict JSON bodies parsed *after* authentication.

401 = we do not know who you are (no/invalid token or session); 403 = we do, and you may not
(not an admin, or a cookie-authenticated write without the CSRF token).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Form, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from services.sessions import SessionService
from web.auth import AuthError, Principal, csrf_token_for, decode_token, refuse_signed_out, same_secret
from web.state import WebState

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"
# The signed cookie holds the session's secret (and a one-shot flash message), nothing else: who
# the user is and whether they are an admin are read from the WebSession row on every request.
SESSION_ID = "sid"
_NOT_LOADED = object()

M = TypeVar("M", bound=BaseModel)


def get_web(request: Request) -> WebState:
    web: WebState = request.app.state.web
    return web


Web = Annotated[WebState, Depends(get_web)]

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="A JWT (HS256, SECRET_KEY) with `sub` = user id, `exp`, and `admin` (boolean). See docs/web.md.",
)


def unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


def session_store(web: WebState) -> SessionService:
    return web.sessions


def session_secret(request: Request) -> str | None:
    secret = request.session.get(SESSION_ID)
    return secret if isinstance(secret, str) and secret else None


def session_principal(request: Request) -> Principal | None:
    """The signed-in user of this request's cookie, read once per request from WebSession: a
    logged-out, revoked or expired session is nobody, whatever the (still validly signed) cookie says."""
    cached = getattr(request.state, "principal", _NOT_LOADED)
    if cached is not _NOT_LOADED:
        return cached if isinstance(cached, Principal) else None
    secret = session_secret(request)
    found = None if secret is None else session_store(get_web(request)).load(secret)
    principal = None if found is None else Principal(found.user_id, found.is_admin)
    if principal is None and secret is not None:
        request.session.pop(SESSION_ID, None)  # the browser drops the dead cookie
    request.state.principal = principal
    return principal


def session_csrf(request: Request) -> str | None:
    secret = session_secret(request)
    if secret is None or session_principal(request) is None:
        return None
    return csrf_token_for(get_web(request).session_key, secret)


def current_user(
    request: Request,
    web: Web,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """API callers: a Bearer token, or the page's session cookie plus the CSRF header on writes."""
    if credentials is not None:
        try:
            bearer, claims = decode_token(web.token_key, credentials.credentials)
            if "jti" in claims:
                # A one-time sign-in link's token: used or not, a leaked link must not open the API.
                raise AuthError("sign-in link tokens (with a 'jti' claim) are not API credentials")
            refuse_signed_out(bearer, claims, session_store(web))
        except AuthError as exc:
            raise unauthorized(str(exc)) from None
        return bearer
    if request.headers.get("authorization"):
        raise unauthorized("Authorization header must be 'Bearer <token>'")
    principal = session_principal(request)
    if principal is None:
        raise unauthorized("not signed in: send 'Authorization: Bearer <token>'")
    if request.method not in SAFE_METHODS:
        # A cookie is sent by the browser on cross-site requests too; the header is not.
        expected = session_csrf(request)
        if expected is None or not same_secret(request.headers.get(CSRF_HEADER), expected):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong X-CSRF-Token header")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


def admin_user(user: CurrentUser) -> Principal:
    if not user.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin only")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]


# --- pages ----------------------------------------------------------------------------------------


def page_user(request: Request) -> Principal:
    principal = session_principal(request)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Please sign in with the link from your application.")
    return principal


PageUser = Annotated[Principal, Depends(page_user)]


def page_admin(user: PageUser) -> Principal:
    if not user.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "This page is for administrators.")
    return user


PageAdmin = Annotated[Principal, Depends(page_admin)]


def checked_form_csrf(request: Request, _user: PageUser, csrf_token: Annotated[str | None, Form()] = None) -> None:
    # Depends on the signed-in user so that a signed-out visitor sees 401, not a CSRF 403.
    expected = session_csrf(request)
    if expected is None or not same_secret(csrf_token, expected):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "The form expired or did not come from this site; reload the page and try again.")


FormCsrf = Depends(checked_form_csrf)


# --- JSON bodies ----------------------------------------------------------------------------------


class MalformedBody(Exception):
    """The request body is not JSON (400, unlike a well-formed body with wrong fields: 422)."""


MAX_JSON_DEPTH = 32
"""Our bodies are flat objects; deeper nesting is refused before validation walks it."""
_TOO_DEEP = f"request body is nested too deeply (at most {MAX_JSON_DEPTH} levels)"


def _nested_deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]  # a loop, not recursion: the point is not to recurse on hostile input
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """Parse the body as `model`; an empty body counts as `{}`.

    Declared after the auth dependency, it runs after it: an unauthenticated caller gets 401,
    not a parse error, and nothing about the body is looked at.
    """

    async def parse(request: Request) -> M:
        raw = await request.body()  # its size is capped by web.middleware.body_limit
        data: Any = {}
        if raw.strip():
            try:
                data = json.loads(raw)
            except RecursionError:
                raise MalformedBody(_TOO_DEEP) from None
            except (ValueError, UnicodeDecodeError) as exc:
                raise MalformedBody(f"request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise MalformedBody("request body must be a JSON object")
        if _nested_deeper_than(data, MAX_JSON_DEPTH):
            raise MalformedBody(_TOO_DEEP)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None

    return parse


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI `requestBody` for a body parsed by `json_body` (FastAPI cannot see it)."""
    return {
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
