"""Every SQL statement on the web's own tables: used sign-in tokens, browser sessions and the
users' sign-outs everywhere (which Bearer tokens they refuse).

Only the web imports this module (the dispatcher and workers never touch these tables). Like the
repository, callers pass the connection inside the transaction they own and "now" explicitly.

Secrets are never stored: a sign-in token's `jti` and a session's cookie secret are kept as their
SHA-256 hex, so the key is fixed-length ASCII (exact under any collation) and a copy of the tables
cannot be replayed.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from schema.models import used_sign_in_tokens, web_sessions, web_sign_outs

t = used_sign_in_tokens.c
w = web_sessions.c
o = web_sign_outs.c

SESSION_SECRET_BYTES = 32


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# --- one-time sign-in tokens ----------------------------------------------------------------------


def consume_jti(conn: Connection, *, jti: str, expires_at: datetime, now: datetime) -> bool:
    """Record `jti` as used until `expires_at`; False if it already was.

    The INSERT is the claim: of two processes consuming the same jti, the primary key lets exactly
    one succeed (the other's INSERT waits for the first to commit, then fails on the duplicate).
    Rows of tokens that have expired anyway are pruned on the way (sign-ins are rare, the index on
    expiresAt keeps it cheap).
    """
    conn.execute(delete(used_sign_in_tokens).where(t.expiresAt < now))
    try:
        with conn.begin_nested():
            conn.execute(insert(used_sign_in_tokens).values(jti=digest(jti), expiresAt=expires_at))
    except IntegrityError:
        return False
    return True


def jti_used(conn: Connection, *, jti: str) -> bool:
    """Whether `jti` was recorded as used (a read: nothing is claimed)."""
    return conn.execute(select(t.jti).where(t.jti == digest(jti))).first() is not None


# --- browser sessions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WebSession:
    user_id: str
    is_admin: bool
    expires_at: datetime


def create_session(conn: Connection, *, user_id: str, is_admin: bool, now: datetime, ttl: timedelta) -> str:
    """A new session row; returns the secret the cookie carries (the row is keyed by its digest).
    Expired sessions are pruned on the way."""
    conn.execute(delete(web_sessions).where(w.expiresAt < now))
    secret = secrets.token_urlsafe(SESSION_SECRET_BYTES)
    conn.execute(
        insert(web_sessions).values(
            id=digest(secret), userId=user_id, isAdmin=is_admin, createdAt=now, expiresAt=now + ttl, revokedAt=None
        )
    )
    return secret


def load_session(conn: Connection, *, secret: str, now: datetime | ColumnElement[datetime]) -> WebSession | None:
    """The live session for a cookie's secret: one primary-key read. `now` may be a clock
    expression (Clock.sql_now) so the read needs no round trip of its own."""
    row = conn.execute(
        select(w.userId, w.isAdmin, w.expiresAt).where(w.id == digest(secret), w.revokedAt.is_(None), w.expiresAt > now)
    ).first()
    return None if row is None else WebSession(row.userId, bool(row.isAdmin), row.expiresAt)


def end_session(conn: Connection, *, secret: str) -> bool:
    """Logout: the row is gone, so the cookie (and every copy of it) stops working at once."""
    return conn.execute(delete(web_sessions).where(w.id == digest(secret))).rowcount == 1


def revoke_user_sessions(conn: Connection, *, user_id: str, now: datetime, admin_only: bool = False) -> int:
    """Sign a user out everywhere (or only their admin sessions): how an admin grant is taken back
    before the sessions it started expire. Returns the number of sessions ended."""
    query = update(web_sessions).where(w.userId == user_id, w.revokedAt.is_(None), w.expiresAt > now)
    if admin_only:
        query = query.where(w.isAdmin == true())
    return conn.execute(query.values(revokedAt=now)).rowcount


# --- sign-outs everywhere (Bearer tokens) ---------------------------------------------------------


def record_sign_out(conn: Connection, *, user_id: str, now: datetime, admin_only: bool = False) -> None:
    """From `now` on, Bearer tokens of `user_id` issued before it are refused (with `admin_only`:
    only those with admin rights). An UPDATE, else an INSERT; of two sign-outs racing to insert the
    first row, the loser's INSERT fails on the primary key and its UPDATE then applies."""
    column = "adminSignedOutAt" if admin_only else "signedOutAt"
    values = {column: now}
    if conn.execute(update(web_sign_outs).where(o.userId == user_id).values(values)).rowcount:
        return
    try:
        with conn.begin_nested():
            conn.execute(insert(web_sign_outs).values(userId=user_id, **values))
    except IntegrityError:
        conn.execute(update(web_sign_outs).where(o.userId == user_id).values(values))


@dataclass(frozen=True)
class SignOut:
    """When a user was last signed out everywhere (all tokens) and out of admin rights."""

    signed_out_at: datetime | None
    admin_signed_out_at: datetime | None


def load_sign_out(conn: Connection, *, user_id: str) -> SignOut | None:
    """The user's sign-outs, None if never signed out: one primary-key read."""
    row = conn.execute(select(o.signedOutAt, o.adminSignedOutAt).where(o.userId == user_id)).first()
    return None if row is None else SignOut(row.signedOutAt, row.adminSignedOutAt)
