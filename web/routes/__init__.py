"""One router per area: cron trigger, the user's own schedule, admin, pages, health."""

from __future__ import annotations

from typing import Any

from web.models import ErrorOut


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer (all with an ErrorOut body)."""
    descriptions = {
        400: "Malformed JSON body (or nested deeper than 32 levels)",
        401: "Not authenticated (missing, invalid or expired token / secret)",
        403: "Authenticated but not allowed (not an admin, or CSRF token missing)",
        404: "No schedule for this user",
        409: "A run of this user holds the lease",
        413: "Request body over 64 KiB",
        422: "Invalid input (wrong type, out of range, unknown field)",
        429: "Run now asked for again within RUN_NOW_COOLDOWN; the Retry-After header says in how many seconds it is admitted",
        503: "Queue, database or configuration not available",
    }
    return {code: {"model": ErrorOut, "description": descriptions[code]} for code in codes}
