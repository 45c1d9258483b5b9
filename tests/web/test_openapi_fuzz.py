"""schemathesis against /openapi.json: generated requests for every documented operation, checked
for server errors and responses that break the schema (status codes, bodies, content types).

Bounded (few examples per operation) so the whole run stays well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import Backend
from tests.web.conftest import CRON_SECRET, WebHarness, make_harness

MAX_EXAMPLES = 40


@pytest.fixture
def fuzzed(sqlite_backend: Backend, redis_url: str) -> Iterator[WebHarness]:
    # With Redis configured every mode is available: a 503 here would be a real failure, not "no queue".
    harness = make_harness(sqlite_backend, REDIS_URL=redis_url)
    sqlite_backend.add_schedules(5)
    harness.client.patch("/api/schedules/me", json={"intervalMinutes": 5}, headers=harness.auth("fuzz-admin", admin=True))
    harness.cron({})  # a live dispatcher: /healthz/scheduler is 503 until one pass ran (the dead-man check)
    yield harness
    harness.client.close()
    harness.app.close()


@pytest.fixture
def api_schema(fuzzed: WebHarness):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed.api)


schema = schemathesis.pytest.from_fixture("api_schema")

pytestmark = pytest.mark.redis


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_matches_its_openapi_schema(case: schemathesis.Case, fuzzed: WebHarness) -> None:
    # An admin token and the cron secret: the generated requests reach the code behind the auth checks.
    headers = {"Authorization": f"Bearer {fuzzed.token('fuzz-admin', admin=True)}", "x-cron-secret": CRON_SECRET}
    # Every default check except negative_data_rejection: query strings are parsed leniently on
    # purpose (`limit=10.0` is 10, unknown parameters are ignored), which that check counts as a failure.
    excluded = [schemathesis.checks.negative_data_rejection]
    if _names_a_calendar(case):
        # Whether a cron expression fires, or a zone exists, is not expressible in JSON Schema: a
        # schema-valid "0 0 30 2 *" or "Mars/Olympus" is rightly 422 (tests/behaviour/test_calendar_schedules.py).
        excluded.append(schemathesis.checks.positive_data_acceptance)
    case.call_and_validate(headers=headers, excluded_checks=excluded)


def _names_a_calendar(case: schemathesis.Case) -> bool:
    fields = {**(case.body if isinstance(case.body, dict) else {}), **(case.query or {})}
    return any(fields.get(name) is not None for name in ("cron", "timeZone", "spreadSeconds", "kind"))
