"""A built-in task that hands each run to a host application over HTTP.

`MONITOR_TASK=worker.webhook:WebhookTask` POSTs `{"userId", "slot", "trigger", "attempt"}` as JSON
to MONITOR_WEBHOOK_URL. The header `X-Monitor-Signature: t=<unix seconds>,v1=<hex>` carries
HMAC-SHA256(MONITOR_WEBHOOK_SECRET, "<t>.<raw body>"): the receiver recomputes it, compares in
constant time, and rejects old timestamps (replay). A non-2xx answer or a timeout fails the run,
with the status and the start of the response, cleaned (core.text), in lastError.
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

    def __call__(self, user_id: str, context: RunContext) -> None:
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
                response.read(RESPONSE_EXCERPT)
        except urllib.error.HTTPError as exc:
            # The remote server chooses these bytes: no terminal or bidi control reaches lastError.
            excerpt = clean_text(exc.read(RESPONSE_EXCERPT).decode("utf-8", errors="replace"), RESPONSE_EXCERPT)
            raise WebhookFailed(f"webhook answered HTTP {exc.code}: {excerpt}") from None
        except (TimeoutError, urllib.error.URLError) as exc:
            reason = clean_text(str(getattr(exc, "reason", exc)), RESPONSE_EXCERPT)
            raise WebhookFailed(f"webhook failed: {reason}") from None
