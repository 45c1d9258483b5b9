"""/api/admin/...: listing with filters, search and paging; changing and running any user;
unlocking expired leases; queue health. Admin flag required (403), token required (401)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from redis import Redis

from core import claims, domain, fenced
from tests.web.conftest import WebHarness
from tests.web.test_cron_api import hold_lease

ADMIN = "/api/admin"


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["userId"] for item in response.json()["items"]]


def seed_every_kind(web: WebHarness) -> dict[str, str]:
    """One user in each state the filters tell apart."""
    b, now = web.backend, web.backend.clock.moment
    [due] = b.add_schedules(1, prefix="due")
    [later] = b.add_schedules(1, prefix="later", due_at=now + timedelta(hours=1))
    [disabled] = b.add_schedules(1, prefix="disabled", enabled=False)
    [running] = b.add_schedules(1, prefix="running", due_at=now + timedelta(hours=1))
    hold_lease(web, running)
    [stale] = b.add_schedules(1, prefix="stale", due_at=now + timedelta(hours=1))
    with b.engine.begin() as conn:
        claims.claim_user(conn, user_id=stale, now=now - timedelta(hours=1), token="dead:1:x",
                        lease_until=now - timedelta(minutes=1), trigger=domain.Trigger.MANUAL)
    [failing] = b.add_schedules(1, prefix="failing", due_at=now + timedelta(hours=1))
    with b.engine.begin() as conn:
        claims.claim_user(conn, user_id=failing, now=now, token="w:1:f", lease_until=now + timedelta(minutes=5), trigger=domain.Trigger.MANUAL)
        fenced.finish_run(conn, user_id=failing, token="w:1:f", started_at=now, status=domain.RunStatus.FAILED,
                        error="boom", next_run_at=now + timedelta(hours=1), now=now)
    return {"due": due, "later": later, "disabled": disabled, "running": running, "stale": stale, "failing": failing}


def test_admin_endpoints_need_a_token_401_and_the_admin_flag_403(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1)
    calls = [("GET", f"{ADMIN}/schedules"), ("GET", f"{ADMIN}/schedules/{user}"), ("PATCH", f"{ADMIN}/schedules/{user}"),
             ("POST", f"{ADMIN}/schedules/{user}/run"), ("GET", f"{ADMIN}/schedules/{user}/runs"),
             ("GET", f"{ADMIN}/schedule?userId={user}"), ("PATCH", f"{ADMIN}/schedule?userId={user}"),
             ("POST", f"{ADMIN}/runs?userId={user}"), ("GET", f"{ADMIN}/runs?userId={user}"),
             ("POST", f"{ADMIN}/unlock"), ("GET", f"{ADMIN}/overview")]
    for method, path in calls:
        assert web.client.request(method, path).status_code == 401, (method, path)
        assert web.client.request(method, path, headers=web.auth(user)).status_code == 403, (method, path)
        assert web.client.request(method, path, headers=web.auth("root", admin=True)).status_code == 200, (method, path)


def test_filters_and_search(web: WebHarness) -> None:
    users = seed_every_kind(web)
    headers = web.auth("root", admin=True)
    assert sorted(ids(web.client.get(f"{ADMIN}/schedules", headers=headers))) == sorted(users.values())
    # An expired lease is due as well: the next pass takes it over.
    expected = {"due": [users["due"], users["stale"]], "disabled": [users["disabled"]], "running": [users["running"]],
                "stale": [users["stale"]], "failing": [users["failing"]]}
    for which, want in expected.items():
        assert ids(web.client.get(f"{ADMIN}/schedules", params={"filter": which}, headers=headers)) == want, which
    assert ids(web.client.get(f"{ADMIN}/schedules", params={"search": "ailin"}, headers=headers)) == [users["failing"]]
    assert ids(web.client.get(f"{ADMIN}/schedules", params={"search": "%"}, headers=headers)) == []
    assert web.client.get(f"{ADMIN}/schedules", params={"filter": "bogus"}, headers=headers).status_code == 422
    stale = web.client.get(f"{ADMIN}/schedules", params={"filter": "stale"}, headers=headers).json()["items"][0]
    assert (stale["staleLease"], stale["running"], stale["lockedBy"]) == (True, False, "dead:1:x")


def test_paging(web: WebHarness) -> None:
    web.backend.add_schedules(7)
    headers = web.auth("root", admin=True)
    first = web.client.get(f"{ADMIN}/schedules", params={"limit": 3}, headers=headers).json()
    assert ([i["userId"] for i in first["items"]], first["nextOffset"]) == (["user-000000", "user-000001", "user-000002"], 3)
    last = web.client.get(f"{ADMIN}/schedules", params={"limit": 3, "offset": 6}, headers=headers).json()
    assert ([i["userId"] for i in last["items"]], last["nextOffset"]) == (["user-000006"], None)
    assert web.client.get(f"{ADMIN}/schedules", params={"limit": 0}, headers=headers).status_code == 422


def test_update_any_user_and_unknown_user_is_404(web: WebHarness) -> None:
    [user] = web.backend.add_schedules(1)
    headers = web.auth("root", admin=True)
    response = web.client.patch(f"{ADMIN}/schedules/{user}", json={"intervalMinutes": 120, "enabled": False}, headers=headers)
    assert response.status_code == 200
    assert (web.backend.schedule(user).interval_minutes, web.backend.schedule(user).enabled) == (120, False)
    assert web.client.patch(f"{ADMIN}/schedules/nobody", json={"enabled": True}, headers=headers).status_code == 404
    assert web.client.get(f"{ADMIN}/schedules/nobody", headers=headers).status_code == 404
    assert web.client.patch(f"{ADMIN}/schedules/{user}", json={"intervalMinutes": 0}, headers=headers).status_code == 422
    assert web.backend.schedule(user).interval_minutes == 120


def test_user_ids_with_slashes_and_odd_characters_work_as_a_query_parameter(web: WebHarness) -> None:
    odd = "team/ä b?c#d%2F"
    headers = web.auth("root", admin=True)
    web.client.patch("/api/schedules/me", json={"intervalMinutes": 5}, headers=web.auth(odd))
    who = {"userId": odd}
    assert web.client.get(f"{ADMIN}/schedule", params=who, headers=headers).json()["userId"] == odd
    assert web.client.post(f"{ADMIN}/runs", params=who, headers=headers).json()["schedule"]["userId"] == odd
    assert [r["trigger"] for r in web.client.get(f"{ADMIN}/runs", params=who, headers=headers).json()] == ["manual"]
    assert web.client.patch(f"{ADMIN}/schedule", params=who, json={"intervalMinutes": 7}, headers=headers).json()["intervalMinutes"] == 7
    assert web.client.get(f"{ADMIN}/schedule", params={"userId": "nobody"}, headers=headers).status_code == 404
    assert web.client.get(f"{ADMIN}/runs", headers=headers).status_code == 422  # userId is required


def test_a_path_cannot_be_read_two_ways(web: WebHarness) -> None:
    # "x%2Fruns" decodes to "x/runs": it used to answer x's history although it names user "x/runs".
    [x] = web.backend.add_schedules(1, prefix="x")
    web.client.patch("/api/schedules/me", json={"intervalMinutes": 5}, headers=web.auth(f"{x}/runs"))
    headers = web.auth("root", admin=True)
    web.client.post(f"{ADMIN}/runs", params={"userId": x}, headers=headers)
    for method, path in [("GET", f"{ADMIN}/schedules/{x}%2Fruns"), ("POST", f"{ADMIN}/schedules/{x}%2Frun"),
                         ("GET", f"{ADMIN}/schedules/{x}%2fruns")]:
        response = web.client.request(method, path, headers=headers)
        assert response.status_code == 400, (method, path, response.text)
        assert "?userId=" in response.json()["message"]
    for method, path, status in [("GET", f"{ADMIN}/schedules/{x}/runs%2Fruns", 404), ("GET", f"{ADMIN}/schedules/{x}%2Fruns/runs", 404),
                                 ("PATCH", f"{ADMIN}/schedules/{x}%2Fruns", 405), ("PATCH", f"{ADMIN}/schedules/{x}/runs", 405)]:
        assert web.client.request(method, path, json={"enabled": False}, headers=headers).status_code == status, (method, path)
    assert [r.user_id for r in web.backend.runs()] == [x]
    assert web.backend.schedule(f"{x}/runs").enabled is True
    assert web.client.get(f"{ADMIN}/runs", params={"userId": f"{x}/runs"}, headers=headers).json() == []
    # Ids without "/" keep working in the path.
    assert len(web.client.get(f"{ADMIN}/schedules/{x}/runs", headers=headers).json()) == 1


def test_run_any_user_now_and_409_while_running(web: WebHarness) -> None:
    users = seed_every_kind(web)
    headers = web.auth("root", admin=True)
    response = web.client.post(f"{ADMIN}/schedules/{users['later']}/run", headers=headers)
    assert response.status_code == 200
    assert response.json()["schedule"]["lastStatus"] == "succeeded"
    assert web.client.post(f"{ADMIN}/schedules/{users['running']}/run", headers=headers).status_code == 409
    assert web.client.post(f"{ADMIN}/schedules/nobody/run", headers=headers).status_code == 404


def test_unlock_releases_only_expired_leases(web: WebHarness) -> None:
    users = seed_every_kind(web)
    headers = web.auth("root", admin=True)
    response = web.client.post(f"{ADMIN}/unlock", headers=headers)
    assert response.json() == {"unlocked": [users["stale"]], "count": 1}
    assert web.backend.schedule(users["stale"]).locked_by is None
    assert web.backend.schedule(users["running"]).locked_by is not None
    assert [r.status for r in web.backend.runs(users["stale"])] == ["lost"]
    assert web.client.post(f"{ADMIN}/unlock", headers=headers).json()["count"] == 0


def test_overview_in_sync_mode(web: WebHarness) -> None:
    web.backend.add_schedules(2)
    headers = web.auth("root", admin=True)
    web.backend.clock.advance(seconds=90)
    body = web.client.get(f"{ADMIN}/overview", headers=headers).json()
    assert body["queue"] == {"mode": "sync", "reachable": None, "queueLength": None, "workers": None,
                             "failedJobs": None, "startedJobs": None, "error": None}
    assert (body["dispatcher"]["dueNow"], body["dispatcher"]["oldestDueAgeSeconds"], body["dispatcher"]["lastPass"]) == (2, 90.0, None)
    web.cron({"mode": "sync"})
    body = web.client.get(f"{ADMIN}/overview", headers=headers).json()
    assert (body["dispatcher"]["lastPass"]["ran"], body["dispatcher"]["dueNow"]) == (2, 0)
    assert body["dispatcher"]["lastRunFinishedAt"] is not None


@pytest.mark.redis
def test_overview_in_queue_mode_reads_rq_registries(queue_web: WebHarness, redis_conn: Redis) -> None:
    queue_web.backend.add_schedules(3)
    queue_web.cron({})
    body = queue_web.client.get(f"{ADMIN}/overview", headers=queue_web.auth("root", admin=True)).json()
    assert body["queue"] == {"mode": "queue", "reachable": True, "queueLength": 3, "workers": 0,
                             "failedJobs": 0, "startedJobs": 0, "error": None}
    assert body["dispatcher"]["lastPass"]["enqueued"] == 3


@pytest.mark.parametrize(
    "path",
    [f"{ADMIN}/schedules?limit=-2", f"{ADMIN}/schedules?limit=0", f"{ADMIN}/schedules?offset=-1",
     f"{ADMIN}/runs?userId=user-000000&limit=-1", f"{ADMIN}/runs?userId=user-000000&limit=0",
     f"{ADMIN}/schedules/user-000000/runs?limit=-1", "/api/schedules/me/runs?limit=-1", "/api/schedules/me/runs?limit=0"],
)
def test_negative_or_zero_paging_is_422(web: WebHarness, path: str) -> None:
    """The API's side of the CLI's paging ranges (schedule list --limit/--offset, show --runs)."""
    web.backend.add_schedules(1)
    assert web.client.get(path, headers=web.auth("user-000000", admin=True)).status_code == 422


@pytest.mark.parametrize(("bad", "says"), [("jose\u0301", "NFC form"), ("alice\u3164", "U+3164"), ("\u2800", "U+2800")])
def test_the_api_refuses_non_nfc_and_invisible_user_ids(web: WebHarness, bad: str, says: str) -> None:
    """The same rule as the CLI's (core.scheduling.validate_user_id), whatever the route."""
    web.backend.add_schedules(1)
    headers = web.auth("root", admin=True)
    response = web.client.patch(f"{ADMIN}/schedule", params={"userId": bad}, json={"intervalMinutes": 9}, headers=headers)
    assert response.status_code == 422 and says in response.text
    cron = web.cron({"userId": bad})
    assert cron.status_code == 422 and says in cron.text
