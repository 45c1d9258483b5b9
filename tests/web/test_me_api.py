"""/api/schedules/me: authentication (401), isolation between users, validation (422), run now
(404/409), history; Bearer tokens and the page's session cookie + CSRF header."""

from __future__ import annotations

import time
import warnings
from datetime import timedelta

import jwt
import pytest

from tests.web.conftest import SECRET_KEY, WebHarness, make_harness
from tests.web.test_cron_api import hold_lease

ME = "/api/schedules/me"


def iso(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{moment.microsecond:06d}" if moment.microsecond else "") + "Z"


# --- 401 ------------------------------------------------------------------------------------------


def bad_tokens(web: WebHarness) -> dict[str, str]:
    now = int(time.time())
    tokens = {
        "garbage": "not-a-jwt",
        "wrong key": web.token("alice", key="another-secret-key-0123456789abcdef"),
        "expired": web.token("alice", ttl=-120),
        "no exp": jwt.encode({"sub": "alice", "admin": False}, SECRET_KEY, algorithm="HS256"),
        "no sub": jwt.encode({"exp": now + 60}, SECRET_KEY, algorithm="HS256"),
        "alg none": jwt.encode({"sub": "alice", "exp": now + 60}, None, algorithm="none"),
        "admin not bool": web.token("alice", admin="yes"),  # type: ignore[arg-type]
    }
    with warnings.catch_warnings():  # PyJWT warns that the key is short for HS512: that is not the point here
        warnings.simplefilter("ignore")
        tokens["HS512"] = jwt.encode({"sub": "alice", "exp": now + 60}, SECRET_KEY, algorithm="HS512")
    return tokens


def test_without_credentials_every_endpoint_is_401(web: WebHarness) -> None:
    web.backend.add_schedules(1, prefix="alice")
    for method, path in [("GET", ME), ("PATCH", ME), ("POST", ME + "/run"), ("GET", ME + "/runs")]:
        response = web.client.request(method, path, json={"intervalMinutes": 5} if method == "PATCH" else None)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["message"]


def test_invalid_tokens_are_401(web: WebHarness) -> None:
    for name, token in bad_tokens(web).items():
        response = web.client.get(ME, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name


def test_a_non_bearer_authorization_header_is_401(web: WebHarness) -> None:
    assert web.client.get(ME, headers={"Authorization": "Basic YWxpY2U6eA=="}).status_code == 401


def test_a_bad_body_from_an_unauthenticated_caller_is_401_not_400(web: WebHarness) -> None:
    assert web.client.patch(ME, content=b"{nope", headers={"content-type": "application/json"}).status_code == 401


# --- reading and changing my schedule -------------------------------------------------------------


def test_read_my_schedule(web: WebHarness) -> None:
    web.backend.add_schedules(1, prefix="alice", interval=15)
    response = web.client.get(ME, headers=web.auth("alice-000000"))
    assert response.status_code == 200
    body = response.json()
    assert body["userId"] == "alice-000000"
    assert (body["intervalMinutes"], body["enabled"], body["running"], body["lastRunAt"]) == (15, True, False, None)
    assert body["nextRunAt"] == iso(web.backend.clock.moment)


def test_no_schedule_yet_is_404_and_patch_creates_it(web: WebHarness) -> None:
    headers = web.auth("newcomer")
    assert web.client.get(ME, headers=headers).status_code == 404
    response = web.client.patch(ME, json={"intervalMinutes": 30}, headers=headers)
    assert response.status_code == 200
    assert web.backend.schedule("newcomer").interval_minutes == 30


def test_changing_the_interval_moves_the_next_run_at_once(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice", interval=5)
    headers = web.auth(user)
    assert web.client.post(ME + "/run", headers=headers).status_code == 200  # ran at T0: slot = T0
    assert web.backend.schedule(user).next_run_at == web.backend.clock.moment + timedelta(minutes=5)
    response = web.client.patch(ME, json={"intervalMinutes": 90}, headers=headers)
    assert response.status_code == 200
    assert response.json()["nextRunAt"] == iso(web.backend.clock.moment + timedelta(minutes=90))
    assert web.backend.schedule(user).interval_minutes == 90


def test_disable_and_enable(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice")
    headers = web.auth(user)
    assert web.client.patch(ME, json={"enabled": False}, headers=headers).json()["enabled"] is False
    assert web.backend.schedule(user).enabled is False
    assert web.client.patch(ME, json={"enabled": True}, headers=headers).json()["enabled"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"intervalMinutes": 0},
        {"intervalMinutes": 1441},
        {"intervalMinutes": -5},
        {"intervalMinutes": "5"},
        {"intervalMinutes": 5.5},
        {"intervalMinutes": True},
        {"intervalMinutes": None, "enabled": "yes"},
        {"enabled": 1},
        {"userId": "bob-000000", "intervalMinutes": 7},
    ],
)
def test_invalid_updates_are_422_with_a_message_and_change_nothing(web: WebHarness, body: dict) -> None:
    [alice] = web.backend.add_schedules(1, prefix="alice", interval=5)
    [bob] = web.backend.add_schedules(1, prefix="bob", interval=5)
    before = (web.backend.schedule(alice), web.backend.schedule(bob))
    response = web.client.patch(ME, json=body, headers=web.auth(alice))
    assert response.status_code == 422
    assert response.json()["message"].startswith("invalid request")
    assert (web.backend.schedule(alice), web.backend.schedule(bob)) == before


def test_malformed_json_is_400(web: WebHarness) -> None:
    response = web.client.patch(ME, content=b"{interval", headers={**web.auth("alice"), "content-type": "application/json"})
    assert response.status_code == 400
    assert "JSON" in response.json()["message"]


# --- isolation ------------------------------------------------------------------------------------


def test_a_user_sees_and_changes_only_their_own_schedule_and_history(web: WebHarness) -> None:
    [alice] = web.backend.add_schedules(1, prefix="alice", interval=5)
    [bob] = web.backend.add_schedules(1, prefix="bob", interval=5)
    web.cron({"userId": bob})  # bob has history; alice has none
    bob_before = web.backend.schedule(bob)
    headers = web.auth(alice)
    assert web.client.get(ME, headers=headers).json()["userId"] == alice
    assert web.client.get(ME + "/runs", headers=headers).json() == []
    # Query parameters naming another user are not an input of these endpoints.
    assert web.client.get(ME, params={"userId": bob}, headers=headers).json()["userId"] == alice
    assert web.client.patch(ME, params={"userId": bob}, json={"intervalMinutes": 60}, headers=headers).json()["userId"] == alice
    assert web.client.post(ME + "/run", params={"userId": bob}, headers=headers).json()["schedule"]["userId"] == alice
    assert web.backend.schedule(bob) == bob_before
    assert [r.user_id for r in web.backend.runs(bob)] == [bob]
    # ...and the admin API is closed to them.
    for method, path in [("GET", "/api/admin/schedules"), ("GET", f"/api/admin/schedules/{bob}"),
                         ("PATCH", f"/api/admin/schedules/{bob}"), ("POST", f"/api/admin/schedules/{bob}/run"),
                         ("GET", f"/api/admin/schedules/{bob}/runs"), ("POST", "/api/admin/unlock"), ("GET", "/api/admin/overview")]:
        response = web.client.request(method, path, headers=headers, json={"intervalMinutes": 1} if method == "PATCH" else None)
        assert response.status_code == 403, (method, path)
    assert web.backend.schedule(bob) == bob_before


# --- run now and history --------------------------------------------------------------------------


def test_run_now_runs_inline_in_sync_mode_and_appears_in_history(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice", due_at=web.backend.clock.moment + timedelta(hours=2))
    headers = web.auth(user)
    response = web.client.post(ME + "/run", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert (body["summary"]["mode"], body["summary"]["ran"], body["summary"]["succeeded"]) == ("sync", 1, 1)
    assert (body["schedule"]["lastStatus"], body["schedule"]["running"]) == ("succeeded", False)
    runs = web.client.get(ME + "/runs", headers=headers).json()
    assert [(r["trigger"], r["status"]) for r in runs] == [("manual", "succeeded")]
    assert web.client.get(ME + "/runs", params={"limit": 0}, headers=headers).status_code == 422


def test_run_now_while_a_run_holds_the_lease_is_409(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice")
    hold_lease(web, user)
    headers = web.auth(user)
    assert web.client.get(ME, headers=headers).json()["running"] is True
    response = web.client.post(ME + "/run", headers=headers)
    assert response.status_code == 409
    assert web.backend.runs() == []


def test_a_user_is_told_until_when_a_run_holds_the_lease_but_not_who_holds_it(web: WebHarness) -> None:
    # The lease token names the worker's host and process id: for operators, not for users.
    [user] = web.backend.add_schedules(1, prefix="alice")
    hold_lease(web, user)
    until = web.backend.schedule(user).locked_until
    mine = web.client.post(ME + "/run", headers=web.auth(user))
    assert mine.status_code == 409
    assert mine.json()["message"] == f"A run is already in progress until {until:%Y-%m-%d %H:%M:%S} UTC; it was not started a second time."
    assert "test:1:held" not in mine.text
    admin = web.client.post(f"/api/admin/schedules/{user}/run", headers=web.auth("root", admin=True))
    assert admin.status_code == 409 and "lease held by test:1:held" in admin.json()["message"]
    cron = web.cron({"userId": user})
    assert cron.status_code == 409 and "lease held by test:1:held" in cron.json()["message"]


def test_run_now_without_a_schedule_is_404(web: WebHarness) -> None:
    assert web.client.post(ME + "/run", headers=web.auth("ghost")).status_code == 404


def test_run_now_again_within_the_cooldown_is_429_with_retry_after(web: WebHarness) -> None:
    # Given alice ran her 1440-minute schedule by hand at T0,
    [user] = web.backend.add_schedules(1, prefix="alice", interval=1440, due_at=web.backend.clock.moment + timedelta(hours=2))
    headers = web.auth(user)
    assert web.client.post(ME + "/run", headers=headers).status_code == 200
    # when she asks again 15 s later, then 429 says when to come back, and nothing ran;
    web.backend.clock.advance(seconds=15)
    again = web.client.post(ME + "/run", headers=headers)
    assert again.status_code == 429
    assert again.headers["Retry-After"] == "45"
    assert again.json()["message"] == f"user {user!r} asked for a run less than 60s ago (RUN_NOW_COOLDOWN): try again in 45s"
    assert len(web.backend.runs(user)) == 1
    # 45 s later it runs again.
    web.backend.clock.advance(seconds=45)
    assert web.client.post(ME + "/run", headers=headers).status_code == 200
    assert len(web.backend.runs(user)) == 2


def test_twenty_back_to_back_run_now_requests_run_once(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice", interval=1440)
    headers = web.auth(user)
    statuses = [web.client.post(ME + "/run", headers=headers).status_code for _ in range(20)]
    assert statuses == [200] + [429] * 19
    assert len(web.backend.runs(user)) == 1


def test_admins_and_the_cron_endpoint_are_exempt_from_the_cooldown(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice")
    admin = web.auth("root", admin=True)
    assert web.client.post(ME + "/run", headers=web.auth(user)).status_code == 200
    assert web.client.post("/api/admin/runs", params={"userId": user}, headers=admin).status_code == 200
    assert web.client.post(f"/api/admin/schedules/{user}/run", headers=admin).status_code == 200
    assert web.cron({"userId": user}).status_code == 200
    assert len(web.backend.runs(user)) == 4
    # An admin's own schedule, run from the user's side (/api/schedules/me), is limited like anyone's.
    [mine] = web.backend.add_schedules(1, prefix="root")
    own = web.auth(mine, admin=True)
    assert web.client.post(ME + "/run", headers=own).status_code == 200
    assert web.client.post(ME + "/run", headers=own).status_code == 429


def test_a_zero_cooldown_does_not_limit_run_now(sqlite_backend) -> None:
    harness = make_harness(sqlite_backend, RUN_NOW_COOLDOWN=0)
    [user] = sqlite_backend.add_schedules(1, prefix="alice")
    headers = harness.auth(user)
    assert [harness.client.post(ME + "/run", headers=headers).status_code for _ in range(3)] == [200, 200, 200]
    harness.client.close()


@pytest.mark.redis
def test_run_now_is_queued_when_redis_is_configured(queue_web: WebHarness) -> None:
    [user] = queue_web.backend.add_schedules(1, prefix="alice")
    body = queue_web.client.post(ME + "/run", headers=queue_web.auth(user)).json()
    assert (body["summary"]["mode"], body["summary"]["enqueued"], body["schedule"]["running"]) == ("queue", 1, True)


# --- the page's session cookie --------------------------------------------------------------------


def test_the_session_cookie_works_for_reads_and_needs_the_csrf_header_for_writes(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice", interval=5)
    client = web.browser_client(user)
    assert client.get(ME).json()["userId"] == user
    assert client.patch(ME, json={"intervalMinutes": 9}).status_code == 403
    assert client.patch(ME, json={"intervalMinutes": 9}, headers={"X-CSRF-Token": "guess"}).status_code == 403
    assert client.post(ME + "/run").status_code == 403
    assert web.backend.schedule(user).interval_minutes == 5
    response = client.patch(ME, json={"intervalMinutes": 9}, headers={"X-CSRF-Token": web.csrf(client)})
    assert response.status_code == 200
    assert web.backend.schedule(user).interval_minutes == 9
    client.close()


def test_a_forged_session_cookie_is_401(web: WebHarness) -> None:
    web.client.cookies.set("monitor_session", "eyJ1aWQiOiAiYm9iIn0=.forged.signature")
    assert web.client.get(ME).status_code == 401

