"""The HTML side without a browser: sign-in links (one-time, expiring), 401/403 pages, CSRF on
form posts, server-side validation of the settings form, escaping, security headers."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest

from core import fenced
from tests.conftest import T0
from tests.web.conftest import WebHarness
from tests.web.test_cron_api import hold_lease


def test_a_sign_in_link_works_once(web: WebHarness) -> None:
    link = web.sign_in_link("alice")
    first = web.client.get(link)
    assert (first.status_code, first.headers["location"]) == (303, "/settings")
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert web.client.get("/settings").status_code == 200
    web.client.cookies.clear()
    again = web.client.get(link)
    assert again.status_code == 401
    assert "already used" in again.text or "invalid" in again.text
    assert web.client.get("/settings").status_code == 401


@pytest.mark.parametrize("kind", ["expired", "no jti", "wrong key", "garbage"])
def test_bad_sign_in_links_are_refused(web: WebHarness, kind: str) -> None:
    token = {
        "expired": web.token("alice", ttl=-120, jti=secrets.token_hex(4)),
        "no jti": web.token("alice"),
        "wrong key": web.token("alice", key="x" * 40, jti=secrets.token_hex(4)),
        "garbage": "abc",
    }[kind]
    response = web.client.get("/login", params={"token": token})
    assert response.status_code == 401
    assert "set-cookie" not in response.headers


def test_admins_land_on_the_admin_page(web: WebHarness) -> None:
    assert web.client.get(web.sign_in_link("root", admin=True)).headers["location"] == "/admin"


def test_signed_out_pages_are_401_html_and_admin_needs_the_flag_403(web: WebHarness) -> None:
    for path in ("/settings", "/admin"):
        response = web.client.get(path)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("text/html")
        assert "sign in" in response.text.lower()
    user = web.browser_client("alice")
    response = user.get("/admin")
    assert response.status_code == 403
    assert "administrators" in response.text
    csrf = web.csrf(user)
    for path, data in [("/admin/unlock", {}), ("/admin/schedules/run", {"user_id": "bob"}), ("/admin/schedules/update", {"user_id": "bob", "interval": "9"})]:
        assert user.post(path, data={"csrf_token": csrf, **data}).status_code == 403, path


def test_the_settings_page_shows_only_my_schedule(web: WebHarness) -> None:
    [alice] = web.backend.add_schedules(1, prefix="alice", interval=15)
    [bob] = web.backend.add_schedules(1, prefix="bob", interval=45)
    web.cron({"userId": bob})
    html = web.browser_client(alice).get("/settings").text
    assert alice in html and bob not in html
    assert 'value="15"' in html and "No runs yet." in html


def test_saving_the_form_with_a_bad_interval_shows_the_error_and_saves_nothing(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice", interval=15)
    client = web.browser_client(user)
    csrf = web.csrf(client)
    before = web.backend.schedule(user)
    for bad in ("0", "1441", "abc", "", "2.5"):
        response = client.post("/settings", data={"csrf_token": csrf, "interval": bad})  # unchecked box: would disable
        assert response.status_code == 422, bad
        assert 'role="alert" hidden' not in response.text  # the error is shown next to the field
        assert "interval must be" in response.text
        assert web.backend.schedule(user) == before
    response = client.post("/settings", data={"csrf_token": csrf, "interval": "30", "enabled": "1"})
    assert (response.status_code, response.headers["location"]) == (303, "/settings")
    assert web.backend.schedule(user).interval_minutes == 30
    assert "Saved." in client.get("/settings").text


def test_form_posts_without_the_csrf_token_change_nothing(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice", interval=15)
    client = web.browser_client(user)
    for data in ({"interval": "30", "enabled": "1"}, {"interval": "30", "enabled": "1", "csrf_token": "forged"}):
        assert client.post("/settings", data=data).status_code == 403
        assert client.post("/settings/run", data=data).status_code == 403
    assert web.backend.schedule(user).interval_minutes == 15
    assert web.backend.runs() == []


def test_run_now_from_the_page_and_a_second_one_is_refused(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice")
    client = web.browser_client(user)
    csrf = web.csrf(client)
    assert client.post("/settings/run", data={"csrf_token": csrf}).status_code == 303
    assert "finished" in client.get("/settings").text
    hold_lease(web, user)
    page = client.get("/settings").text
    assert "Run in progress…" in page and 'id="run-now" disabled' in page
    client.post("/settings/run", data={"csrf_token": csrf})
    assert "already in progress" in client.get("/settings").text
    assert len(web.backend.runs(user)) == 1


def test_run_now_again_too_soon_tells_the_user_when_it_works_again(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice")
    client = web.browser_client(user)
    csrf = web.csrf(client)
    assert client.post("/settings/run", data={"csrf_token": csrf}).status_code == 303
    client.get("/settings")  # shows (and clears) "finished"
    web.backend.clock.advance(seconds=20)
    assert client.post("/settings/run", data={"csrf_token": csrf}).status_code == 303
    page = client.get("/settings").text
    assert "At most once every 60 seconds." in page
    assert "You asked for a run less than 60 seconds ago" in page
    assert "Try again in 40 seconds." in page
    assert len(web.backend.runs(user)) == 1
    # The admin page runs the same user at once: operators are exempt.
    admin = web.browser_client("root", admin=True)
    admin.post("/admin/schedules/run", data={"csrf_token": web.csrf(admin, "/admin"), "user_id": user})
    assert f"Run of {user} finished." in admin.get("/admin").text
    assert len(web.backend.runs(user)) == 2


def test_the_settings_page_tells_until_when_a_run_holds_the_lease_but_not_who_holds_it(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1, prefix="alice")
    hold_lease(web, user)
    until = web.backend.schedule(user).locked_until
    client = web.browser_client(user)
    client.post("/settings/run", data={"csrf_token": web.csrf(client)})
    page = client.get("/settings").text
    assert f"A run is already in progress until {until:%Y-%m-%d %H:%M:%S} UTC" in page
    assert "test:1:held" not in page
    admin = web.browser_client("root", admin=True)
    admin.post("/admin/schedules/run", data={"csrf_token": web.csrf(admin, "/admin"), "user_id": user})
    assert "lease held by test:1:held" in admin.get("/admin").text


def test_user_supplied_text_is_escaped(web: WebHarness) -> None:
    evil = '<script>alert("x")</script>'
    web.client.patch("/api/schedules/me", json={"intervalMinutes": 5}, headers=web.auth(evil))
    for client, path in [(web.browser_client(evil), "/settings"), (web.browser_client("root", admin=True), "/admin")]:
        html = client.get(path).text
        assert evil not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    html = web.browser_client("root", admin=True).get("/admin", params={"q": evil}).text
    assert evil not in html


def test_admin_page_lists_filters_pages_and_acts(web: WebHarness) -> None:
    web.backend.add_schedules(55)
    web.backend.add_schedules(2, prefix="off", enabled=False)
    admin = web.browser_client("root", admin=True)
    first = admin.get("/admin").text  # ordered by user id: off-000000, off-000001, user-000000...
    assert "user-000047" in first and "user-000048" not in first and 'id="next-page"' in first
    assert "user-000048" in admin.get("/admin", params={"page": 2}).text
    disabled = admin.get("/admin", params={"filter": "disabled"}).text
    assert "off-000001" in disabled and "user-000000" not in disabled
    assert admin.get("/admin", params={"filter": "nonsense"}).status_code == 422
    csrf = web.csrf(admin, "/admin")
    response = admin.post("/admin/schedules/update", data={"csrf_token": csrf, "user_id": "off-000000", "enabled": "1", "filter": "disabled"})
    assert (response.status_code, response.headers["location"]) == (303, "/admin?filter=disabled")
    assert web.backend.schedule("off-000000").enabled is True
    admin.post("/admin/schedules/update", data={"csrf_token": csrf, "user_id": "user-000003", "interval": "0"})
    assert "interval must be" in admin.get("/admin").text
    assert web.backend.schedule("user-000003").interval_minutes == 5
    admin.post("/admin/schedules/run", data={"csrf_token": csrf, "user_id": "user-000004"})
    assert [r.trigger for r in web.backend.runs("user-000004")] == ["manual"]
    assert admin.post("/admin/unlock", data={"csrf_token": csrf}).status_code == 303
    assert "Unlocked 0 expired lease(s)." in admin.get("/admin").text


def test_pages_send_security_headers(web: WebHarness) -> None:
    response = web.browser_client("alice").get("/settings")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"


def test_unknown_paths_are_html_404_for_pages_and_json_under_api(web: WebHarness) -> None:
    assert web.client.get("/nowhere").headers["content-type"].startswith("text/html")
    api = web.client.get("/api/nowhere")
    assert (api.status_code, api.json()) == (404, {"message": "Not Found"})


def test_logout(web: WebHarness) -> None:
    client = web.browser_client("alice")
    assert client.post("/logout", data={"csrf_token": web.csrf(client)}).status_code == 200
    assert client.get("/settings").status_code == 401


@pytest.mark.parametrize("path, data", [
    ("/admin/schedules/update", {"user_id": "user-000000", "enabled": "0"}),
    ("/admin/schedules/run", {"user_id": "user-000000"}),
])
def test_an_admin_form_with_a_bad_filter_is_refused_before_anything_happens(web: WebHarness, path: str, data: dict[str, str]) -> None:
    [user] = web.backend.add_schedules(1)
    before = web.backend.schedule(user)
    admin = web.browser_client("root", admin=True)
    response = admin.post(path, data={"csrf_token": web.csrf(admin, "/admin"), **data, "filter": "nonsense"})
    assert response.status_code == 422 and "unknown filter" in response.text
    assert web.backend.schedule(user) == before
    assert web.backend.runs(user) == []


def test_the_admin_form_refuses_a_non_nfc_user_id(web: WebHarness) -> None:
    web.backend.add_schedules(1, prefix="jos\u00e9")
    admin = web.browser_client("root", admin=True)
    response = admin.post("/admin/schedules/update", data={"csrf_token": web.csrf(admin, "/admin"), "user_id": "jose\u0301-000000", "interval": "9"})
    assert response.status_code == 303
    assert "NFC form" in admin.get("/admin").text
    assert web.backend.schedule("jos\u00e9-000000").interval_minutes == 5


@pytest.mark.redis
def test_the_queued_note_goes_once_a_worker_has_started_the_run(queue_web: WebHarness) -> None:
    waiting, started = queue_web.backend.add_schedules(2, prefix="alice")
    # Given two users who each queue a run from the page,
    clients = {user: queue_web.browser_client(user) for user in (waiting, started)}
    for user, client in clients.items():
        assert client.post("/settings/run", data={"csrf_token": queue_web.csrf(client)}).status_code == 303
    # when a worker starts the second one's run before its page comes back,
    token = queue_web.backend.schedule(started).locked_by or ""
    with queue_web.backend.engine.begin() as conn:
        clock = queue_web.backend.clock
        assert fenced.start_run(conn, user_id=started, token=token, lease_until=clock.sql_now(20 * 60_000), now=clock.sql_now())
    # then the first page says the run waits, the second shows it running without the stale note.
    page = clients[waiting].get("/settings").text
    assert f"Run of {waiting} queued for a worker." in page and 'pill-queued">queued<' in page
    page = clients[started].get("/settings").text
    assert 'pill-running">running<' in page
    assert 'id="flash"' not in page and "queued for a worker" not in page
