"""Logging set-up: text for people, `LOG_FORMAT=json` (one JSON object per line) for collectors.

Lines about a run pass `extra=run_fields(run)`, so the user id, slot and lease token are fields of
their own in JSON (and already part of the message text).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from typing_extensions import override

from core.clock import utc_text
from core.domain import ClaimedRun
from core.settings import Settings

RUN_FIELDS = ("user_id", "slot", "lease_token", "attempt", "trigger")


def run_fields(run: ClaimedRun) -> dict[str, object]:
    return {"user_id": run.user_id, "slot": utc_text(run.slot), "lease_token": run.token, "attempt": run.attempt, "trigger": str(run.trigger)}


class JsonFormatter(logging.Formatter):
    @override
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": utc_text(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in RUN_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.LOG_FORMAT == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.LOG_LEVEL)
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(settings.LOG_LEVEL)))
