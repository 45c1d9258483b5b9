"""Sign-in links and sessions against a hostile reader (issue 11 items 3 and 10): a sign-in token
is never an API credential, a used link stays used across restarts and processes, and logout or a
revocation ends a session everywhere, copies of the cookie included. SQLite and MariaDB."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.clock import epoch_ms, utc_naive
from core.db import create_db_engine
from services.sessions import SessionService
from tests.conftest import T0, Backend
from tests.web.conftest import WebHarness, make_harness
from tests.web.test_health_and_cli import run_cli

ME = "/api/schedules/me"


def test_a_sign_in_link_token_is_not_a_bearer_credential_used_or_not(web: WebHarness) -> None:
    """A leaked link (browser history, a proxy log) must not open the API, admin included."""
    web.client.patch(ME, json={"intervalMinutes": 5}, headers=web.auth("alice"))
    for admin, path in ((False, ME), (True, "/api/admin/overview")):
        token = web.token("alice", admin=admin, jti=secrets.token_hex(8))
        unused = web.client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert unused.status_code == 401 and "jti" in unused.json()["message"]
        assert TestClient(web.api, follow_redirects=False).get(f"/login?token={token}").status_code == 303
        assert web.client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_a_used_link_stays_used_after_a_restart_and_in_another_web_process(web: WebHarness) -> None:
    link = web.sign_in_link("alice")
    assert TestClient(web.api, follow_redirects=False).get(link).status_code == 303
    restarted = make_harness(web.backend)  # a new app: nothing of the first one's memory
    try:
        assert restarted.client.get(link).status_code == 401
    finally:
        restarted.client.close()


def test_two_processes_consuming_one_jti_at_once_admit_exactly_one(backend: Backend) -> None:
    engines = [create_db_engine(backend.url) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[bool] = []

    def consume(engine) -> None:
        store = SessionService(engine, backend.clock)
        barrier.wait()
        results.append(store.consume("the-same-jti", 4_000_000_000))

    try:
        threads = [threading.Thread(target=consume, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for engine in engines:
            engine.dispose()
    assert sorted(results) == [False, True]


def test_used_token_rows_are_pruned_once_their_tokens_expired(backend: Backend) -> None:
    from sqlalchemy import func, select

    from schema.models import used_sign_in_tokens
    store = SessionService(backend.engine, backend.clock)
    t0 = epoch_ms(backend.clock.moment) // 1000
    assert store.consume("old", t0 + 60)
    backend.clock.advance(minutes=5)
    assert store.consume("new", t0 + 3600)
    with backend.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(used_sign_in_tokens)).scalar_one() == 1


def test_a_cookie_copied_before_logout_is_dead_after_it(web: WebHarness) -> None:
    web.client.patch(ME, json={"intervalMinutes": 5}, headers=web.auth("alice"))
    client = web.browser_client("alice")
    stolen = dict(client.cookies)
    thief = TestClient(web.api, follow_redirects=False, cookies=stolen)
    assert thief.get("/settings").status_code == 200 and thief.get(ME).status_code == 200

    assert client.post("/logout", data={"csrf_token": web.csrf(client)}).status_code == 200

    thief = TestClient(web.api, follow_redirects=False, cookies=stolen)
    assert thief.get("/settings").status_code == 401
    assert thief.get(ME).status_code == 401


def test_revoking_a_users_admin_sessions_takes_effect_on_the_next_request(web: WebHarness) -> None:
    admin = web.browser_client("ops", admin=True)
    plain = web.browser_client("ops")
    assert admin.get("/admin").status_code == 200
    assert SessionService(web.backend.engine, web.backend.clock).revoke_user("ops", admin_only=True) == 1

    assert admin.get("/admin").status_code == 401, "the admin session is gone"
    assert plain.get("/settings").status_code == 200, "admin_only left the plain session alone"


def test_sessions_expire_with_their_row(web: WebHarness) -> None:
    client = web.browser_client("alice")
    web.backend.clock.advance(hours=8, seconds=1)
    assert client.get("/settings").status_code == 401


def test_sign_out_command_ends_every_session_of_a_user(sqlite_web: WebHarness, tmp_path: Path) -> None:
    sqlite_web.backend.clock.moment = utc_naive(datetime.now(UTC))  # the command runs on the real clock
    client = sqlite_web.browser_client("ops", admin=True)
    other = sqlite_web.browser_client("alice")
    result = run_cli("sign-out", "ops", cwd=tmp_path, DATABASE_URL=sqlite_web.backend.url)
    assert (result.returncode, result.stdout.strip()) == (0, "ended 1 session(s) of 'ops'"), result.stderr
    assert client.get("/admin").status_code == 401
    assert other.get("/settings").status_code == 200


@pytest.mark.parametrize("bad", ["ops ", "o\u202eps"])
def test_sign_out_refuses_a_bad_user_id(sqlite_web: WebHarness, tmp_path: Path, bad: str) -> None:
    result = run_cli("sign-out", bad, cwd=tmp_path, DATABASE_URL=sqlite_web.backend.url)
    assert result.returncode == 2 and "user id" in result.stderr


def test_a_token_for_alice_with_a_trailing_space_reaches_nobody(web: WebHarness) -> None:
    """On MariaDB 'alice ' used to compare equal to 'alice' (PAD SPACE): such a token read and
    changed alice's schedule. It is refused now, and alice's row is untouched."""
    web.client.patch(ME, json={"intervalMinutes": 5}, headers=web.auth("alice"))
    for method, body in (("GET", None), ("PATCH", {"intervalMinutes": 9})):
        response = web.client.request(method, ME, json=body, headers=web.auth("alice "))
        assert response.status_code == 401 and "whitespace" in response.json()["message"]
    assert web.client.get(ME, headers=web.auth("alice")).json()["intervalMinutes"] == 5


@pytest.mark.parametrize("exp", [253_402_300_800, 10**20, 1e300], ids=["year 10000", "10**20", "1e300"])
def test_a_token_expiring_after_the_year_9999_is_401_at_login_and_as_bearer(web: WebHarness, exp: float) -> None:
    """A host may mint such a token (or login-link --ttl did): refused, never an OverflowError (500)."""
    link_token = web.token("alice", jti=secrets.token_hex(8), exp=exp)
    response = TestClient(web.api, follow_redirects=False).get(f"/login?token={link_token}")
    assert response.status_code == 401
    bearer = web.client.get(ME, headers={"Authorization": f"Bearer {web.token('alice', exp=exp)}"})
    assert bearer.status_code == 401 and "exp" in bearer.json()["message"]


@pytest.mark.parametrize(("sub", "says"), [("jose\u0301", "NFC form"), ("alice\u3164", "U+3164"), ("\u115f", "U+115F")])
def test_a_token_whose_sub_is_not_nfc_or_invisible_signs_in_nobody(web: WebHarness, sub: str, says: str) -> None:
    bearer = web.client.get(ME, headers={"Authorization": f"Bearer {web.token(sub)}"})
    assert bearer.status_code == 401 and says in bearer.json()["message"]
    browser = TestClient(web.api, follow_redirects=False)
    assert browser.get(web.sign_in_link(sub)).status_code == 401
    assert browser.get("/settings").status_code == 401


# --- a sign-in link opened in someone else's session (issue 15 item 6) ---------------------------


def _hidden(html: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def _link_still_unused(web: WebHarness, link: str) -> bool:
    return TestClient(web.api, follow_redirects=False).get(link).status_code == 303


def test_a_link_for_another_user_asks_before_switching_and_uses_nothing(web: WebHarness) -> None:
    admin = web.browser_client("root", admin=True)
    link = web.sign_in_link("alice")

    page = admin.get(link)

    assert page.status_code == 200 and "set-cookie" not in page.headers
    assert 'id="current-user">root<' in page.text and 'id="wanted-user">alice<' in page.text
    assert '<form method="post" action="/login"' in page.text and 'id="stay"' in page.text
    assert admin.get("/admin").status_code == 200, "still root, still an admin"
    assert _link_still_unused(web, link), "showing the question did not use up the one-time link"


def test_switching_is_a_post_with_the_csrf_token_and_ends_the_old_session(web: WebHarness) -> None:
    admin = web.browser_client("root", admin=True)
    old_cookie = dict(admin.cookies)
    page = admin.get(web.sign_in_link("alice")).text

    switched = admin.post("/login", data={"csrf_token": _hidden(page, "csrf_token"), "token": _hidden(page, "token")})

    assert (switched.status_code, switched.headers["location"]) == (303, "/settings")
    assert admin.get("/admin").status_code == 403, "now alice, no admin rights"
    assert 'id="signed-in-as">alice' in admin.get("/settings").text
    assert TestClient(web.api, follow_redirects=False, cookies=old_cookie).get("/admin").status_code == 401, "root's session ended"
    assert admin.post("/login", data={"csrf_token": web.csrf(admin), "token": _hidden(page, "token")}).status_code == 401, "used once"


@pytest.mark.parametrize("csrf", [None, "forged"])
def test_a_switch_without_the_sessions_csrf_token_changes_nothing(web: WebHarness, csrf: str | None) -> None:
    """A cross-site form cannot post the switch: it lacks the session's CSRF token."""
    admin = web.browser_client("root", admin=True)
    link = web.sign_in_link("alice")
    token = link.split("token=", 1)[1]
    data = {"token": token} | ({} if csrf is None else {"csrf_token": csrf})
    assert admin.post("/login", data=data).status_code == 403
    assert admin.get("/admin").status_code == 200
    assert _link_still_unused(web, link)


def test_head_in_a_live_session_neither_asks_nor_uses_the_link(web: WebHarness) -> None:
    admin = web.browser_client("root", admin=True)
    link = web.sign_in_link("alice")
    assert admin.head(link).status_code == 200
    assert admin.get("/admin").status_code == 200
    assert _link_still_unused(web, link)


def test_the_users_own_link_and_no_session_sign_in_as_before(web: WebHarness) -> None:
    alice = web.browser_client("alice")
    again = alice.get(web.sign_in_link("alice", admin=True))
    assert (again.status_code, again.headers["location"]) == (303, "/admin"), "the same user: no question"
    fresh = TestClient(web.api, follow_redirects=False)
    assert fresh.get(web.sign_in_link("bob")).status_code == 303, "no session: no question"


def test_a_bad_link_in_a_live_session_is_refused_and_keeps_the_session(web: WebHarness) -> None:
    admin = web.browser_client("root", admin=True)
    expired = "/login?token=" + web.token("alice", ttl=-120, jti=secrets.token_hex(4))
    assert admin.get(expired).status_code == 401
    assert admin.get("/admin").status_code == 200


def test_a_used_link_in_a_live_session_is_refused_at_once_not_after_the_question(web: WebHarness) -> None:
    """Asking "switch to alice?" for a link that can no longer sign anyone in would end in a 401
    after the answer: the question is asked only of a link that would still work."""
    admin = web.browser_client("root", admin=True)
    link = web.sign_in_link("alice")
    assert TestClient(web.api, follow_redirects=False).get(link).status_code == 303, "used up elsewhere"

    page = admin.get(link)

    assert page.status_code == 401 and "already used" in page.text
    assert 'id="wanted-user"' not in page.text
    assert admin.get("/admin").status_code == 200, "the session stays root's"


def test_the_question_escapes_both_user_ids(web: WebHarness) -> None:
    evil = '<img src=x onerror="alert(1)">'
    admin = web.browser_client("root", admin=True)
    page = admin.get(web.sign_in_link(evil)).text
    assert evil not in page
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page


# --- sign out everywhere: Bearer tokens and links issued before it ------------------------------

T0_EPOCH = int(T0.replace(tzinfo=UTC).timestamp())  # the harness's clock, which times the sign-out


def given_users(web: WebHarness, *user_ids: str) -> None:
    for user_id in user_ids:
        web.app.services.schedules.set(user_id, interval=5, enabled=True)


def test_signing_out_everywhere_refuses_bearer_tokens_issued_before_it(web: WebHarness) -> None:
    # Given a token alice's host issued a minute before she is signed out everywhere,
    given_users(web, "alice", "bob")
    old = web.token("alice", iat=T0_EPOCH - 60)
    assert web.client.get(ME, headers={"Authorization": f"Bearer {old}"}).status_code == 200
    web.app.services.sessions.revoke_user("alice")
    # then it is refused, with the reason, and a token issued after the sign-out works.
    refused = web.client.get(ME, headers={"Authorization": f"Bearer {old}"})
    assert refused.status_code == 401 and "signed out everywhere at 2026-01-05 12:00:00 UTC" in refused.json()["message"]
    assert web.client.get(ME, headers={"Authorization": f"Bearer {web.token('alice', iat=T0_EPOCH + 1)}"}).status_code == 200
    assert web.client.get(ME, headers={"Authorization": f"Bearer {web.token('bob', iat=T0_EPOCH - 60)}"}).status_code == 200, "only alice"


def test_a_token_of_the_very_second_of_the_sign_out_is_refused_and_one_without_iat_too(web: WebHarness) -> None:
    given_users(web, "alice")
    without_iat = web.token("alice", iat=None)
    assert web.client.get(ME, headers={"Authorization": f"Bearer {without_iat}"}).status_code == 200, "never signed out: accepted"
    web.backend.clock.advance(milliseconds=400)
    web.app.services.sessions.revoke_user("alice")
    for token in (web.token("alice", iat=T0_EPOCH), without_iat):
        response = web.client.get(ME, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401 and "token revoked" in response.json()["message"]


def test_signing_out_of_admin_rights_refuses_only_the_admin_tokens_issued_before(web: WebHarness) -> None:
    given_users(web, "ops")
    admin, plain = web.token("ops", admin=True, iat=T0_EPOCH - 60), web.token("ops", iat=T0_EPOCH - 60)
    web.app.services.sessions.revoke_user("ops", admin_only=True)
    assert web.client.get("/api/admin/overview", headers={"Authorization": f"Bearer {admin}"}).status_code == 401
    assert web.client.get(ME, headers={"Authorization": f"Bearer {plain}"}).status_code == 200
    fresh = web.token("ops", admin=True, iat=T0_EPOCH + 1)
    assert web.client.get("/api/admin/overview", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


def test_a_sign_in_link_mailed_before_the_sign_out_no_longer_signs_in(web: WebHarness) -> None:
    def link(iat: int) -> str:
        return "/login?token=" + web.token("alice", iat=iat, jti=secrets.token_hex(8))

    mailed = link(T0_EPOCH - 60)
    web.app.services.sessions.revoke_user("alice")
    response = web.client.get(mailed)
    assert response.status_code == 401 and "invalid, expired or was already used" in response.text
    assert web.client.get(link(T0_EPOCH + 1)).status_code == 303, "a link issued after the sign-out works"


def test_the_sign_out_command_revokes_the_users_bearer_tokens(sqlite_web: WebHarness, tmp_path: Path) -> None:
    # The real clock on both sides: the CLI's sign-out and the host's token.
    given_users(sqlite_web, "alice")
    before = sqlite_web.token("alice", iat=int(datetime.now(UTC).timestamp()) - 5)
    assert run_cli("sign-out", "alice", cwd=tmp_path, DATABASE_URL=sqlite_web.backend.url).returncode == 0
    assert run_cli("sign-out", "alice", cwd=tmp_path, DATABASE_URL=sqlite_web.backend.url).returncode == 0, "twice is fine"
    assert sqlite_web.client.get(ME, headers={"Authorization": f"Bearer {before}"}).status_code == 401
    after = sqlite_web.token("alice", iat=int(datetime.now(UTC).timestamp()) + 2)
    assert sqlite_web.client.get(ME, headers={"Authorization": f"Bearer {after}"}).status_code == 200
