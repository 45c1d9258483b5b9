"""HTTP plumbing every route shares: HEAD on every GET route, the Allow header of a 405, and the
size and nesting limits on request bodies (refused with 413 / 400 before anything is acted on)."""

from __future__ import annotations

import pytest

from tests.web.conftest import WebHarness


# --- HEAD and 405 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/", "/openapi.json", "/static/app.css"])
def test_head_answers_like_get_without_a_body(sqlite_web: WebHarness, path: str) -> None:
    get = sqlite_web.client.get(path)
    head = sqlite_web.client.head(path)
    assert head.status_code == get.status_code, head.text
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_head_on_signed_in_pages_and_the_api(sqlite_web: WebHarness) -> None:
    client = sqlite_web.browser_client("alice")
    assert (client.head("/settings").status_code, client.head("/settings").content) == (200, b"")
    response = sqlite_web.client.head("/api/schedules/me/runs", headers=sqlite_web.auth("alice"))
    assert (response.status_code, response.content) == (200, b"")
    assert sqlite_web.client.head("/api/schedules/me/runs").status_code == 401


def test_head_does_not_use_up_a_sign_in_link(sqlite_web: WebHarness) -> None:
    # Link scanners in mail clients probe with HEAD; the user's own click must still work.
    link = sqlite_web.sign_in_link("alice")
    assert sqlite_web.client.head(link).status_code == 200
    assert "set-cookie" not in sqlite_web.client.head(link).headers
    assert sqlite_web.client.get(link).status_code == 303


@pytest.mark.parametrize("method, path, allow", [
    ("DELETE", "/healthz", "GET, HEAD"),
    ("POST", "/readyz", "GET, HEAD"),
    ("PUT", "/api/schedules/me", "GET, HEAD, PATCH"),
    ("GET", "/api/cron/one-click-start", "POST"),
    ("HEAD", "/api/cron/one-click-start", "POST"),
    ("DELETE", "/settings", "GET, HEAD, POST"),
    ("GET", "/admin/unlock", "POST"),
    ("POST", "/static/app.css", "GET, HEAD"),
])
def test_a_405_names_the_allowed_methods(sqlite_web: WebHarness, method: str, path: str, allow: str) -> None:
    response = sqlite_web.client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
