"""Browser sessions and one-time sign-in tokens: the web's state that outlives a request, kept in
the database so every web process shares it and a restart keeps it (design: docs/web.md "Sessions")."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine

from core import sessions
from core.clock import Clock, to_ms_precision
from core.sessions import WebSession

SESSION_TTL = timedelta(hours=8)
CLOCK_LEEWAY_SECONDS = 30  # as web.auth accepts an expired token for this long


class SessionService:
    """Used sign-in tokens and browser sessions, in the database (core.sessions), shared by every
    web process and kept across restarts. Each method owns its transaction and clock read."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    def consume(self, jti: str, expires_at: float) -> bool:
        """Mark `jti` used until its token expires (plus the leeway); False if it already was."""
        until = to_ms_precision(datetime(1970, 1, 1) + timedelta(seconds=expires_at + CLOCK_LEEWAY_SECONDS))
        with self.engine.begin() as conn:
            return sessions.consume_jti(conn, jti=jti, expires_at=until, now=self.clock.now(conn))

    def used(self, jti: str) -> bool:
        """Whether a sign-in link's `jti` was used already (a read: the link stays usable)."""
        with self.engine.connect() as conn:
            return sessions.jti_used(conn, jti=jti)

    def start(self, user_id: str, *, admin: bool) -> str:
        """A new session; returns the secret for the cookie."""
        with self.engine.begin() as conn:
            return sessions.create_session(conn, user_id=user_id, is_admin=admin, now=self.clock.now(conn), ttl=SESSION_TTL)

    def load(self, secret: str) -> WebSession | None:
        """Whose a cookie's session is, if it is still live (one read)."""
        with self.engine.connect() as conn:
            return sessions.load_session(conn, secret=secret, now=self.clock.sql_now())

    def end(self, secret: str) -> None:
        with self.engine.begin() as conn:
            sessions.end_session(conn, secret=secret)

    def revoke_user(self, user_id: str, *, admin_only: bool = False) -> int:
        """Sign `user_id` out everywhere (or out of admin rights only): end every live session and,
        in the same transaction, refuse from now on the Bearer tokens issued before now."""
        with self.engine.begin() as conn:
            now = self.clock.now(conn)
            sessions.record_sign_out(conn, user_id=user_id, now=now, admin_only=admin_only)
            return sessions.revoke_user_sessions(conn, user_id=user_id, now=now, admin_only=admin_only)

    def token_revoked(self, user_id: str, *, admin: bool, issued_at: float | None) -> datetime | None:
        """When the user was signed out, if that refuses a Bearer token issued at `issued_at` (its
        `iat`, unix seconds; None when the token has none), else None.

        `iat` has whole seconds: a token issued in the very second of the sign-out counts as
        before it (refused; the host mints another a second later). A token without `iat` cannot
        show it is newer than a sign-out, so once a user was signed out everywhere it is refused."""
        with self.engine.connect() as conn:
            found = sessions.load_sign_out(conn, user_id=user_id)
        if found is None:
            return None
        for moment in (found.signed_out_at, found.admin_signed_out_at if admin else None):
            if moment is not None and (issued_at is None or datetime(1970, 1, 1) + timedelta(seconds=issued_at) < moment.replace(microsecond=0) + timedelta(seconds=1)):
                return moment
        return None
