"""Web fixtures: the FastAPI app around a real database (the `backend` fixtures from
tests/conftest.py: SQLite, and MariaDB or PostgreSQL chosen per test by tests/conftest.py's
`_web_test_on_the_other_server`) and, for queue mode, the throwaway Redis.

API tests drive it in-process with FastAPI's TestClient; browser tests (test_browser.py) serve it
with uvicorn on a free loopback port.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from monitor_scheduler.wiring import App
from tests.conftest import Backend
from web.app import create_app

SECRET_KEY = "web-tests-secret-key-0123456789abcdef"
CRON_SECRET = "web-tests-cron-secret-42"


@dataclass
class WebHarness:
    backend: Backend
    app: App
    api: FastAPI
    client: TestClient

    def token(self, user_id: str, *, admin: bool = False, ttl: int = 600, key: str = SECRET_KEY, **claims: Any) -> str:
        """A host-minted JWT, built by hand with PyJWT exactly as docs/web.md tells hosts to."""
        now = int(time.time())
        body: dict[str, Any] = {"sub": user_id, "admin": admin, "iat": now, "exp": now + ttl}
        body.update(claims)
        return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="HS256")

    def auth(self, user_id: str, *, admin: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id, admin=admin)}"}

    def cron(self, body: Any = None, *, secret: str | None = CRON_SECRET, raw: bytes | None = None):
        headers = {} if secret is None else {"x-cron-secret": secret}
        if raw is not None:
            return self.client.post("/api/cron/one-click-start", content=raw, headers={**headers, "content-type": "application/json"})
        if body is None:
            return self.client.post("/api/cron/one-click-start", headers=headers)
        return self.client.post("/api/cron/one-click-start", json=body, headers=headers)

    def sign_in_link(self, user_id: str, *, admin: bool = False) -> str:
        return "/login?token=" + self.token(user_id, admin=admin, jti=secrets.token_hex(8))

    def browser_client(self, user_id: str, *, admin: bool = False) -> TestClient:
        """A separate client (own cookie jar) signed in through a one-time link."""
        client = TestClient(self.api, follow_redirects=False)
        response = client.get(self.sign_in_link(user_id, admin=admin))
        assert response.status_code == 303, response.text
        return client

    def csrf(self, client: TestClient, page: str = "/settings") -> str:
        html = client.get(page).text
        marker = 'name="csrf_token" value="'
        start = html.index(marker) + len(marker)
        return html[start : html.index('"', start)]


def make_harness(backend: Backend, **overrides: object) -> WebHarness:
    values: dict[str, object] = {"SECRET_KEY": SECRET_KEY, "CRON_SECRET": CRON_SECRET}
    values.update(overrides)
    app = App(backend.settings(**values), backend.engine, backend.clock)
    api = create_app(app.services)
    return WebHarness(backend, app, api, TestClient(api, follow_redirects=False))


@pytest.fixture
def web(backend: Backend) -> Iterator[WebHarness]:
    """Sync mode (no Redis) on SQLite and on one database server."""
    harness = make_harness(backend)
    yield harness
    harness.client.close()


@pytest.fixture
def sqlite_web(sqlite_backend: Backend) -> Iterator[WebHarness]:
    harness = make_harness(sqlite_backend)
    yield harness
    harness.client.close()


@pytest.fixture
def queue_web(backend: Backend, redis_url: str) -> Iterator[WebHarness]:
    """Queue mode: REDIS_URL points at the throwaway Redis."""
    harness = make_harness(backend, REDIS_URL=redis_url)
    yield harness
    harness.client.close()
    harness.app.close()
