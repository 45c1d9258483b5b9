"""The webhook task against a real HTTP server on loopback, through the full run path."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typing_extensions import override

from dispatcher.service import Dispatcher
from core.exceptions import ConfigurationError
from tests.conftest import Backend
from core.executor import Runner
from core.tasks import RunContext, load_task
from worker.webhook import SIGNATURE_HEADER, WebhookFailed, WebhookTask, verify

SECRET = "whsec-test"


class Receiver:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 200
        self.delay = 0.0
        self.body = b'{"ok":true}'


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers["content-length"]))
            state.requests.append({"headers": dict(self.headers), "raw": raw, "at": int(time.time())})
            time.sleep(state.delay)
            try:
                self.send_response(state.status)
                self.send_header("content-length", str(len(state.body)))
                self.end_headers()
                self.wfile.write(state.body)
            except BrokenPipeError:
                pass  # the client gave up (the timeout test)

        @override
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{server.server_port}/hooks/monitor"
    server.shutdown()
    server.server_close()


def run_pass(backend: Backend, url: str, **settings):
    cfg = backend.settings(MONITOR_TASK="worker.webhook:WebhookTask", MONITOR_WEBHOOK_URL=url, MONITOR_WEBHOOK_SECRET=SECRET, **settings)
    runner = Runner(backend.engine, cfg, backend.clock, load_task(cfg.MONITOR_TASK, cfg))
    return Dispatcher.inline(cfg, backend.engine, backend.clock, runner).tick()


def test_each_run_is_posted_signed_and_succeeds_on_2xx(sqlite_backend: Backend, receiver) -> None:
    state, url = receiver
    sqlite_backend.add_schedules(1)
    assert run_pass(sqlite_backend, url).succeeded == 1
    [request] = state.requests
    assert json.loads(request["raw"]) == {"userId": "user-000000", "slot": "2026-01-05T12:00:00.000Z", "trigger": "sync", "attempt": 1}
    header = request["headers"][SIGNATURE_HEADER]
    assert verify(SECRET.encode(), header, request["raw"], now=request["at"])
    assert not verify(b"other-secret", header, request["raw"], now=request["at"])
    assert not verify(SECRET.encode(), header, request["raw"] + b" ", now=request["at"]), "the body is signed"
    assert not verify(SECRET.encode(), header, request["raw"], now=request["at"] + 3600), "an old signature is a replay"


def test_a_non_2xx_answer_fails_the_run_with_status_and_excerpt(sqlite_backend: Backend, receiver) -> None:
    state, url = receiver
    state.status, state.body = 503, b"maintenance until noon" + b"x" * 1000
    sqlite_backend.add_schedules(1)
    assert run_pass(sqlite_backend, url).failed == 1
    row = sqlite_backend.schedule("user-000000")
    assert row.last_status == "failed" and row.last_error is not None
    assert "HTTP 503" in row.last_error and "maintenance until noon" in row.last_error
    assert len(row.last_error) < 400, "an excerpt, not the whole answer"
    assert row.locked_by is None and row.next_run_at > sqlite_backend.clock.moment, "the schedule moves on"


def test_the_remote_answer_is_cleaned_before_it_becomes_the_error(sqlite_backend: Backend, receiver) -> None:
    """The remote server chooses the excerpt: its terminal and bidi controls never reach lastError."""
    state, url = receiver
    state.status, state.body = 500, "down\x1b]0;owned\x07 \u009b2J\u202eevil".encode()
    task = WebhookTask(url, SECRET.encode(), timeout=5)
    with pytest.raises(WebhookFailed) as failed:
        task("user-000000", RunContext(slot=sqlite_backend.clock.moment, trigger="sync", attempt=1))
    assert str(failed.value) == "webhook answered HTTP 500: down ]0;owned   2Jevil"


def test_a_timeout_fails_the_run(sqlite_backend: Backend, receiver) -> None:
    state, url = receiver
    state.delay = 1.5
    sqlite_backend.add_schedules(1)
    assert run_pass(sqlite_backend, url, MONITOR_WEBHOOK_TIMEOUT=0.3).failed == 1
    assert "timed out" in (sqlite_backend.schedule("user-000000").last_error or "")


def test_an_unreachable_receiver_fails_the_run(sqlite_backend: Backend) -> None:
    sqlite_backend.add_schedules(1)
    assert run_pass(sqlite_backend, "http://127.0.0.1:1/hook").failed == 1
    assert "webhook failed" in (sqlite_backend.schedule("user-000000").last_error or "")


def test_the_webhook_task_needs_its_url_and_secret(sqlite_backend: Backend) -> None:
    cfg = sqlite_backend.settings(MONITOR_TASK="worker.webhook:WebhookTask")
    with pytest.raises(ConfigurationError, match="MONITOR_WEBHOOK_URL"):
        load_task(cfg.MONITOR_TASK, cfg)


def test_the_receivers_json_answer_is_the_runs_result_and_any_other_answer_stores_none(sqlite_backend: Backend, receiver) -> None:
    state, url = receiver
    [user] = sqlite_backend.add_schedules(1, interval=5)
    answers = [b'{"checked": 12, "alerts": 1}', b"OK", b'{"pages": "' + b"x" * 5000 + b'"}']

    for answer in answers:
        state.body = answer
        assert run_pass(sqlite_backend, url).succeeded == 1
        sqlite_backend.clock.advance(minutes=5)

    assert [r.result for r in sqlite_backend.runs(user)] == [
        '{"checked":12,"alerts":1}', None, "(not kept: 5012 bytes of JSON, more than the 4096 kept)",
    ]
