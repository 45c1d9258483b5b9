"""HTTP plumbing every route shares: HEAD on every GET route, the Allow header of a 405, and the
size and nesting limits on request bodies (refused with 413 / 400 before anything is acted on)."""

from __future__ import annotations

import concurrent.futures

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


def run_on_own_thread(function, *args):
    """Run an event loop on a thread of its own: the browser tests' Playwright (sync API) may hold
    one on the main thread, and anyio refuses to start a second there."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()


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


# --- request bodies -------------------------------------------------------------------------------

LIMIT = 64 * 1024


def deeply_nested(depth: int) -> bytes:
    return b'{"intervalMinutes": 5, "x": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [40, 1000, (LIMIT - 40) // 2])
def test_deeply_nested_json_is_400_and_changes_nothing(sqlite_web: WebHarness, depth: int) -> None:
    body = deeply_nested(depth)
    headers = {**sqlite_web.auth("alice"), "content-type": "application/json"}
    response = sqlite_web.client.patch("/api/schedules/me", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["message"] == "request body is nested too deeply (at most 32 levels)"
    assert sqlite_web.client.get("/api/schedules/me", headers=sqlite_web.auth("alice")).status_code == 404
    assert sqlite_web.cron(raw=deeply_nested(1000)).status_code == 400


def test_json_nested_within_the_limit_is_judged_on_its_fields(sqlite_web: WebHarness) -> None:
    headers = {**sqlite_web.auth("alice"), "content-type": "application/json"}
    response = sqlite_web.client.patch("/api/schedules/me", content=deeply_nested(20), headers=headers)
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["x"]


def test_a_json_body_over_the_cap_is_413_and_changes_nothing(sqlite_web: WebHarness) -> None:
    [user] = sqlite_web.backend.add_schedules(1)
    body = b'{"intervalMinutes": 30, "pad": "' + b"x" * LIMIT + b'"}'
    for headers in (sqlite_web.auth(user), {}):  # refused on its size alone, signed in or not
        response = sqlite_web.client.patch("/api/schedules/me", content=body, headers={**headers, "content-type": "application/json"})
        assert response.status_code == 413
        assert response.json() == {"message": f"request body too large: at most {LIMIT} bytes"}
    assert sqlite_web.backend.schedule(user).interval_minutes == 5
    assert sqlite_web.cron(raw=body).status_code == 413
    assert sqlite_web.backend.runs() == []


def test_a_body_just_under_the_cap_is_read(sqlite_web: WebHarness) -> None:
    body = b'{"intervalMinutes": 30, "pad": "' + b"x" * (LIMIT - 100) + b'"}'
    headers = {**sqlite_web.auth("alice"), "content-type": "application/json"}
    assert sqlite_web.client.patch("/api/schedules/me", content=body, headers=headers).status_code == 422  # "pad" is unknown


@pytest.mark.parametrize("path", ["/settings", "/admin/schedules/update"])
def test_a_form_post_over_the_cap_is_413_and_changes_nothing(sqlite_web: WebHarness, path: str) -> None:
    [user] = sqlite_web.backend.add_schedules(1)
    client = sqlite_web.browser_client(user, admin=True)
    data = {"csrf_token": sqlite_web.csrf(client), "user_id": user, "interval": "30", "enabled": "1", "q": "x" * LIMIT}
    response = client.post(path, data=data)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html") and "request body too large" in response.text
    assert sqlite_web.backend.schedule(user).interval_minutes == 5


# The TestClient reads a request body completely before the app sees it, so streaming is tested on
# the middleware itself with a hand-made ASGI `receive`.


def _scope(headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http", "method": "POST", "path": "/api/schedules/me", "root_path": "", "headers": headers, "query_string": b""}


def test_a_chunked_body_is_refused_once_past_the_cap_without_reading_the_rest() -> None:
    import anyio
    from fastapi import HTTPException
    from starlette.responses import PlainTextResponse

    from web.middleware.body_limit import BodySizeLimit

    chunks_read = 0

    async def endless_body() -> dict:
        nonlocal chunks_read
        chunks_read += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    async def app_reading_everything(scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass

    async def never_sent(message) -> None:
        raise AssertionError(message)

    limited = BodySizeLimit(app_reading_everything, refuse=lambda *a: PlainTextResponse(""), max_bytes=LIMIT)
    with pytest.raises(HTTPException) as refused:
        run_on_own_thread(anyio.run, limited, _scope([]), endless_body, never_sent)
    assert refused.value.status_code == 413
    assert chunks_read == LIMIT // 1024 + 1


def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    import anyio
    from starlette.responses import PlainTextResponse

    from web.middleware.body_limit import BodySizeLimit

    async def must_not_read() -> dict:
        raise AssertionError("the body was read")

    async def must_not_run(scope, receive, send) -> None:
        raise AssertionError("the app was called")

    sent: list[dict] = []

    async def send(message) -> None:
        sent.append(message)

    limited = BodySizeLimit(must_not_run, refuse=lambda scope, status, text: PlainTextResponse(text, status), max_bytes=LIMIT)
    run_on_own_thread(anyio.run, limited, _scope([(b"content-length", b"200000000")]), must_not_read, send)
    assert sent[0]["status"] == 413 and sent[1]["body"] == f"request body too large: at most {LIMIT} bytes".encode()


def test_a_body_without_content_length_is_counted_and_refused_inside_the_app(sqlite_web: WebHarness) -> None:
    # A generator makes httpx send it chunked, without Content-Length: the cap is met while reading.
    [user] = sqlite_web.backend.add_schedules(1)

    def chunks(data: bytes):
        yield from (data[i : i + 8192] for i in range(0, len(data), 8192))

    json_body = b'{"intervalMinutes": 30, "pad": "' + b"x" * LIMIT + b'"}'
    response = sqlite_web.client.patch("/api/schedules/me", content=chunks(json_body),
                                       headers={**sqlite_web.auth(user), "content-type": "application/json"})
    assert (response.status_code, response.json()) == (413, {"message": f"request body too large: at most {LIMIT} bytes"})
    client = sqlite_web.browser_client(user)
    form = f"csrf_token={sqlite_web.csrf(client)}&interval=30&enabled=1&pad={'x' * LIMIT}".encode()
    response = client.post("/settings", content=chunks(form), headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413 and "request body too large" in response.text
    assert sqlite_web.backend.schedule(user).interval_minutes == 5
