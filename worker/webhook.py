"""A built-in task that hands each run to a host application over HTTP.

`MONITOR_TASK=worker.webhook:WebhookTask` POSTs `{"userId", "slot", "trigger", "attempt"}` as JSON
to MONITOR_WEBHOOK_URL. The header `X-Monitor-Signature: t=<unix seconds>,v1=<hex>` carries
HMAC-SHA256(MONITOR_WEBHOOK_SECRET, "<t>.<raw body>"): the receiver recomputes it, compares in
constant time, and rejects old timestamps (replay). A non-2xx answer or a timeout fails the run,
with the status and the start of the response, cleaned (core.text), in lastError. A 2xx answer
whose body is JSON (`{"checked": 12}`) is the run's result (stored with the run, capped like any
task's result: core.tasks.encode_result); any other body is ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from core.clock import utc_text
from core.exceptions import ConfigurationError
from core.settings import Settings
from core.text import clean_text
from worker.tasks import RunContext

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Monitor-Signature"
RESPONSE_EXCERPT = 300
RESPONSE_READ_LIMIT = 64 * 1024  # bytes of a 2xx answer read for its JSON (the result keeps 4 KB of it, or a note)


class WebhookFailed(Exception):
    """The receiver answered non-2xx, timed out or could not be reached."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: bytes, header: str, body: bytes, *, now: int, tolerance: int = 300) -> bool:
    """What a receiver does (Python version of the README's Node.js example)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


class WebhookTask:
    def __init__(self, url: str, secret: bytes, timeout: float, clock: Callable[[], float] = time.time) -> None:
        self.url, self.secret, self.timeout, self.clock = url, secret, timeout, clock

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookTask:
        if settings.MONITOR_WEBHOOK_URL is None or settings.MONITOR_WEBHOOK_SECRET is None:
            raise ConfigurationError("invalid setting MONITOR_WEBHOOK_URL/MONITOR_WEBHOOK_SECRET: both are required by worker.webhook:WebhookTask")
        return cls(settings.MONITOR_WEBHOOK_URL, settings.MONITOR_WEBHOOK_SECRET.get_secret_value().encode(), settings.MONITOR_WEBHOOK_TIMEOUT)

    def __call__(self, user_id: str, context: RunContext) -> object:
        """POST the run; the receiver's JSON answer, if it gave one, is the run's result."""
        body = json.dumps(
            {"userId": user_id, "slot": utc_text(context.slot), "trigger": context.trigger, "attempt": context.attempt},
            separators=(",", ":"),
        ).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.secret, int(self.clock()), body), "User-Agent": "monitor-scheduler"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = response.read(RESPONSE_READ_LIMIT)
        except urllib.error.HTTPError as exc:
            # The remote server chooses these bytes: no terminal or bidi control reaches lastError.
            excerpt = clean_text(exc.read(RESPONSE_EXCERPT).decode("utf-8", errors="replace"), RESPONSE_EXCERPT)
            raise WebhookFailed(f"webhook answered HTTP {exc.code}: {excerpt}") from None
        except (TimeoutError, urllib.error.URLError) as exc:
            reason = clean_text(str(getattr(exc, "reason", exc)), RESPONSE_EXCERPT)
            raise WebhookFailed(f"webhook failed: {reason}") from None
        return _json_or_none(answer)


def _json_or_none(body: bytes) -> object:
    """The answer's JSON value, None for an empty or non-JSON answer (or one cut at the read limit)."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        logger.debug("webhook answer is not JSON (%s bytes): no result stored", len(body))
        return None
