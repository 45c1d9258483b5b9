"""Who the caller is: signed, expiring JWTs (HS256 with SECRET_KEY), minted by the host application.

Claims: `sub` (the user id, required), `exp` (required, checked, before the year 9999), `admin` (boolean, default false),
and for one-time sign-in links a `jti` that the server remembers as used. A token with a `jti` is a
sign-in link's and is accepted at /login only, never as a Bearer API credential.

`services.sessions.SessionService` keeps what outlives a request in the database, shared by every web process and
kept across restarts: the used `jti`s, and the browser sessions a sign-in starts (the cookie
carries only the session's secret; see docs/web.md "Sessions").
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

import jwt

from core.scheduling import validate_user_id
from services.sessions import CLOCK_LEEWAY_SECONDS, SessionService

ALGORITHM = "HS256"
DEFAULT_LINK_TTL_SECONDS = 15 * 60
MAX_EXP = int(datetime(9999, 1, 1, tzinfo=UTC).timestamp())
"""The latest `exp` accepted: a year of margin below datetime's limit (leeway, time zones)."""


class AuthError(Exception):
    """The token is missing, malformed, badly signed, expired or already used."""


@dataclass(frozen=True)
class Principal:
    user_id: str
    admin: bool


def mint_token(secret: str, user_id: str, *, admin: bool = False, ttl_seconds: int = DEFAULT_LINK_TTL_SECONDS, jti: str | None = None) -> str:
    """What a host application does (docs/web.md shows the same in Python and Node.js)."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "admin": admin, "iat": now, "exp": now + ttl_seconds}
    if jti is not None:
        claims["jti"] = jti
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str) -> tuple[Principal, dict[str, object]]:
    """Verify signature and expiry; return who it names and the raw claims. Raises AuthError."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}, leeway=CLOCK_LEEWAY_SECONDS
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    expires = claims["exp"]
    if isinstance(expires, bool) or not isinstance(expires, int | float) or not expires <= MAX_EXP:
        # PyJWT only checks that `exp` has not passed; beyond year 9999 no date (used-token row,
        # session) can hold it: refused here, not an OverflowError later.
        raise AuthError("invalid token: 'exp' must be a number of seconds before the year 9999")
    admin = claims.get("admin", False)
    if not isinstance(admin, bool):
        raise AuthError("invalid token: 'admin' must be a boolean")
    try:
        user_id = validate_user_id(claims["sub"])
    except ValueError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    return Principal(user_id, admin), claims


def refuse_signed_out(principal: Principal, claims: dict[str, object], sessions: SessionService) -> None:
    """A Bearer token of a user signed out everywhere (`monitor-scheduler sign-out`) after the
    token was issued (`iat`) is refused; so is one without `iat` once the user was signed out."""
    issued = claims.get("iat")
    issued_at = float(issued) if isinstance(issued, int | float) and not isinstance(issued, bool) else None
    when = sessions.token_revoked(principal.user_id, admin=principal.admin, issued_at=issued_at)
    if when is not None:
        reason = "issued before" if issued_at is not None else "without 'iat' after"
        raise AuthError(f"token revoked: {reason} the user was signed out everywhere at {when:%Y-%m-%d %H:%M:%S} UTC; ask for a new token")


def check_sign_in_token(secret: str, token: str, used: SessionService) -> Principal:
    """A sign-in link's token as it would be used, without using it: valid, carrying a `jti`, not
    used before, its user not signed out since."""
    principal, jti, _expires = _sign_in_claims(secret, token, used)
    if used.used(jti):
        raise AuthError("this sign-in link was already used")
    return principal


def _sign_in_claims(secret: str, token: str, used: SessionService) -> tuple[Principal, str, float]:
    """Who a sign-in token names, its jti and its expiry, once it is valid and its user was not
    signed out since (whether it was used is for the caller: a read, or the consume itself)."""
    principal, claims = decode_token(secret, token)
    refuse_signed_out(principal, claims, used)  # a link mailed before a sign-out everywhere dies with it
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise AuthError("sign-in tokens need a 'jti' claim (one-time links)")
    expires = claims.get("exp")
    if not isinstance(expires, (int, float)):
        raise AuthError("sign-in tokens need a numeric 'exp' claim")
    return principal, jti, float(expires)


def consume_sign_in_token(secret: str, token: str, used: SessionService) -> Principal:
    """A sign-in link's token, used up (by any process: the consume is the claim, so of two racing
    uses exactly one signs in; no read before it)."""
    principal, jti, expires = _sign_in_claims(secret, token, used)
    if not used.consume(jti, expires):
        raise AuthError("this sign-in link was already used")
    return principal


def sign_in_url(base_url: str, secret: str, user_id: str, *, admin: bool, ttl_seconds: int) -> str:
    token = mint_token(secret, user_id, admin=admin, ttl_seconds=ttl_seconds, jti=secrets.token_urlsafe(16))
    return f"{base_url.rstrip('/')}/login?{urlencode({'token': token})}"


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so timing does not reveal how much of a secret matched."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def csrf_token_for(session_key: str, session_secret: str) -> str:
    """The CSRF token of a session: derived from its secret, so the cookie carries nothing else."""
    return hmac.new(session_key.encode("utf-8"), b"csrf:" + session_secret.encode("utf-8"), hashlib.sha256).hexdigest()


def derived_key(secret: str, purpose: str) -> str:
    """A separate key per use of SECRET_KEY (JWTs vs. session cookies), so one never verifies the other."""
    return hmac.new(secret.encode("utf-8"), purpose.encode("utf-8"), hashlib.sha256).hexdigest()
